"""`benchmarks.floor` prices what it counts: its figures are only as true as its counts.

The rebuild's floor is counted from a real log and the read model the real rebuild made of it
(a few hundred events written as `benchmarks.pipeline` writes them), here checked against the
same files counted another way. No timing is asserted (benchmarks print figures; tests do not
time them)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from benchmarks import floor, pipeline


def test_the_rebuild_floor_counts_every_event_row_and_personal_value(tmp_path: Path) -> None:
    events = 200
    setup, measured = pipeline._rebuild_one("127.0.0.1:9", "sqlite", "SQLite", events, tmp_path, None)
    data = Path(setup.services["bookings"]["DATA_DIR"])
    least = floor.rebuild(data / "bookings-views.sqlite3", data / "bookings-events.sqlite3")

    views = sqlite3.connect(data / "bookings-views.sqlite3")
    tables = [
        name
        for (name,) in views.execute("SELECT name FROM sqlite_master WHERE type='table'")
        if not name.startswith(("sqlite_", "rebuild_"))
    ]
    rows = sum(views.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in tables)  # noqa: S608
    bookings = views.execute("SELECT count(*) FROM bookings").fetchone()[0]
    tokens = views.execute("SELECT count(DISTINCT token) FROM booking_search_tokens").fetchone()[0]
    sealed = views.execute(
        "SELECT count(email_sealed) + count(name_sealed) + count(contact_sealed) + count(form_sealed)"
        " FROM bookings"
    ).fetchone()[0]
    views.close()

    assert measured.count == events
    assert bookings == events // 2  # each booking placed, then cancelled
    assert least.counts == {
        "events": events,
        "personal_values": 2 * bookings,  # each placement's email and name, sealed in the store
        "distinct_tokens": tokens,
        "sealed_values": sealed,
        "rows": rows,
    }
    assert tokens > bookings  # a token per prefix: more than one per customer
    assert all(us > 0 for us in least.parts.values())
    assert least.us == sum(least.parts.values())


def test_the_command_floor_counts_the_customer_s_search_tokens_as_the_projection_makes_them() -> None:
    place, pay = floor.commands()
    [token_rows] = [what for what in place.parts if what.endswith("search-token rows")]
    assert int(token_rows.split()[0]) >= 20  # "Test Customer", guest-…@example.com: a row per prefix
    assert place.us > pay.us > 0
