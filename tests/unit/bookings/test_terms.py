"""The customer rules (hypothesis): cut-offs in days or hours in the tenant's time zone, and the
promise about terms frozen per booking."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from services.bookings.statuses import SYSTEM_STATUSES
from services.bookings.terms import Cutoff, Terms, applicable_rule, refusal

ZONES = [
    "UTC",
    "Europe/Vienna",
    "America/New_York",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
]
instants = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2032, 1, 1), timezones=st.just(UTC)
)
cutoffs = st.one_of(
    st.builds(Cutoff, st.integers(0, 30), st.just("days")),
    st.builds(Cutoff, st.integers(0, 24 * 30), st.just("hours")),
)
terms = st.builds(
    Terms,
    settings_version=st.integers(0, 5),
    allow_cancel=st.booleans(),
    cancel_cutoff=cutoffs,
    allow_modify=st.booleans(),
    modify_cutoff=cutoffs,
    blocking_statuses=st.frozensets(st.sampled_from(["PEND", "HOLD", "PART", "PAID", "POSTPONED"])),
    timezone=st.sampled_from(ZONES),
)
statuses = st.sampled_from([*SYSTEM_STATUSES, "POSTPONED"])
actions = st.sampled_from(["cancel", "modify"])


@given(cutoff=st.integers(0, 30), start=instants, now=instants, zone=st.sampled_from(ZONES))
def test_a_cutoff_in_days_counts_calendar_days_in_the_tenant_time_zone(cutoff, start, now, zone):
    frozen = Terms(allow_cancel=True, cancel_cutoff=Cutoff(cutoff, "days"), timezone=zone)
    refused = refusal("cancel", "PEND", start, frozen, frozen, now)
    local = ZoneInfo(zone)
    last_day = start.astimezone(local).date() - timedelta(days=cutoff)
    allowed = now < start and now.astimezone(local).date() <= last_day
    assert (refused is None) == allowed, (refused, now.astimezone(local), start.astimezone(local))


@given(hours=st.integers(0, 24 * 30), start=instants, now=instants)
def test_a_cutoff_in_hours_counts_back_from_the_start(hours, start, now):
    frozen = Terms(allow_modify=True, modify_cutoff=Cutoff(hours, "hours"))
    refused = refusal("modify", "HOLD", start, frozen, frozen, now)
    assert (refused is None) == (now < start - timedelta(hours=hours))


@given(action=actions, status=statuses, start=instants, now=instants, frozen=terms, current=terms)
def test_nothing_is_allowed_once_started_closed_or_switched_off(action, status, start, now, frozen, current):
    refused = refusal(action, status, start, frozen, current, now)
    if status in ("STOP", "VOID"):
        assert refused is not None and refused.code == "already_closed"
    elif not current.allows(action):
        assert refused is not None and refused.code == "setting_off"  # applies at once
    elif now >= start:
        assert refused is not None and refused.code in ("already_started", "status_blocks")


@settings(max_examples=300)
@given(action=actions, status=statuses, start=instants, now=instants, frozen=terms, later=terms)
def test_a_later_change_never_makes_a_booking_stricter_unless_it_switches_off(
    action, status, start, now, frozen, later
):
    assume(later.allows(action))
    if refusal(action, status, start, frozen, frozen, now) is None:  # allowed under its own terms
        assert refusal(action, status, start, frozen, later, now) is None


@settings(max_examples=300)
@given(action=actions, status=statuses, start=instants, now=instants, frozen=terms, current=terms)
def test_a_booking_gets_at_least_what_a_new_booking_would_get(action, status, start, now, frozen, current):
    if refusal(action, status, start, current, current, now) is None:  # a booking placed today
        assert refusal(action, status, start, frozen, current, now) is None


@given(action=actions, start=instants, frozen=terms, current=terms)
def test_the_deadline_is_never_after_the_start_and_is_given_in_utc(action, start, frozen, current):
    deadline = applicable_rule(action, frozen, current).deadline(start)
    assert deadline <= start and deadline.utcoffset() == timedelta(0)


def test_a_policys_terms_follow_its_settings_though_parsed_once():
    from services.bookings.tenants import TenantPolicy

    policy = TenantPolicy(tenant_id="t", settings_version=1, settings={"allow_cancel": False})
    first = policy.terms()
    assert policy.terms() is first  # the same settings: parsed once
    assert first.allow_cancel is False
    policy.adopt(2, {"allow_cancel": True})
    assert policy.terms() is not first and policy.terms().allow_cancel is True
    policy.adopt(1, {"allow_cancel": False})  # stale: ignored
    assert policy.terms().allow_cancel is True
    # Another policy (another tenant, or this one read back from the store) with equal settings
    # in another dict gets its own, equal terms.
    twin = TenantPolicy(tenant_id="u", settings_version=2, settings={"allow_cancel": True})
    assert twin.terms() == policy.terms()
