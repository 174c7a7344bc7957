"""The soak benchmark's arithmetic: the RSS summary, its least-squares slope, the mixed rates,
and how it counts the services' answers."""

import os

import pytest

from benchmarks.soak import Answer, answer_of, mixed_rates, rss_bytes, rss_summary, slope_per_minute

MB = 2**20


def test_the_slope_of_a_straight_line_is_its_rise_per_minute():
    samples = [(t, 100 + 2 * t) for t in range(0, 600, 5)]  # 2 per second
    assert slope_per_minute(samples) == pytest.approx(120)


def test_noise_around_a_level_has_no_slope():
    samples = [(t, 100 + (1 if t % 10 else -1)) for t in range(0, 600, 5)]
    assert slope_per_minute(samples) == pytest.approx(0, abs=0.01)


@pytest.mark.parametrize("samples", [[], [(0, 5.0)], [(3, 5.0), (3, 7.0)]])
def test_too_few_times_have_no_slope(samples):
    assert slope_per_minute(samples) == 0


def test_a_flat_series_is_within_tolerance():
    summary = rss_summary([(0, 100 * MB), (60, 105 * MB), (120, 97 * MB), (180, 102 * MB)])
    assert summary["start_mb"] == 100
    assert summary["end_mb"] == 102
    assert summary["min_mb"] == 97
    assert summary["max_mb"] == 105
    assert summary["change_pct"] == 2.0
    assert summary["seconds"] == 180
    assert summary["samples"] == 4
    assert summary["flat"] is True


def test_a_peak_beyond_ten_percent_is_not_flat_even_if_it_ends_where_it_began():
    summary = rss_summary([(0, 100 * MB), (60, 111 * MB), (120, 100 * MB)])
    assert summary["change_pct"] == 0
    assert summary["flat"] is False


def test_steady_growth_shows_in_the_change_and_the_slope():
    summary = rss_summary([(t * 60, (100 + 5 * t) * MB) for t in range(11)])
    assert summary["change_pct"] == 50
    assert summary["slope_mb_per_min"] == pytest.approx(5)
    assert summary["flat"] is False and summary["floor_flat"] is False


def test_the_lowest_of_the_first_and_last_fifth_look_past_transient_peaks():
    level = [100, 164, 100, 100, 164, 100, 100, 100, 164, 101]  # a 64 MiB hash now and then
    summary = rss_summary([(t * 5, v * MB) for t, v in enumerate(level)])
    assert (summary["low_start_mb"], summary["low_end_mb"]) == (100, 101)
    assert summary["flat"] is False and summary["floor_flat"] is True
    assert summary["max_mb"] == 164
    assert summary["samples_mb"][1] == [5, 164]


def test_no_samples_say_nothing_about_flatness():
    assert rss_summary([]) == {"samples": 0, "flat": None}


def test_the_resident_set_of_this_process_is_read_from_proc():
    assert rss_bytes(os.getpid()) > 10 * MB
    assert rss_bytes(2**22 + 12345) == 0  # no such process (above the default pid_max)


def test_paths_run_together_share_the_fraction_of_the_machine():
    rates = mixed_rates({"read": 800, "place": 40, "cancel": 20, "login": 0}, 0.5)
    assert rates == {"read": 100, "place": 5, "cancel": 2.5, "login": 0}


def test_a_slow_path_still_runs():
    assert mixed_rates({"claim": 0.3, "read": 10}, 0.5) == {"claim": 0.1, "read": 2.5}


def test_a_good_answer_is_its_status():
    assert answer_of(200, {"bookings": []}, late=5.0) == 200
    assert answer_of(202, None) == 202


def test_a_booking_not_shown_yet_is_late_not_failed():
    answer = answer_of(404, {"title": "Not found"}, late=12.5, url="/v1/me/bookings/b", headers={"a": "b"})
    assert isinstance(answer, Answer)
    assert (answer.late, answer.label) == (12.5, "404")
    assert (answer.url, answer.headers) == ("/v1/me/bookings/b", {"a": "b"})  # to look again


def test_an_account_not_known_yet_is_late_and_labelled_by_its_code():
    answer = answer_of(403, {"code": "not_verified"}, late=3.0)
    assert isinstance(answer, Answer) and answer.late == 3.0 and answer.label == "403 not_verified"


@pytest.mark.parametrize(
    ("status", "body", "label"),
    [
        (403, {"code": "account_archived"}, "403 account_archived"),
        (403, {"code": "logins_disabled"}, "403 logins_disabled"),
        (401, {"title": "Unauthorized"}, "401"),
        (409, {"code": "booking_changed"}, "409 booking_changed"),
        (429, None, "429"),
    ],
)
def test_every_other_refusal_is_a_failure_by_status_and_code(status, body, label):
    answer = answer_of(status, body, late=3.0)
    assert isinstance(answer, Answer) and answer.late is None and answer.label == label
