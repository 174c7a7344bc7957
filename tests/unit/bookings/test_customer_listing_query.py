"""A customer's listing reads their own bookings through the indexes, never every booking of
their tenant: each side of "made under the account, or with its verified email" is one index's
search. With the tenant outside the OR, SQLite searched by the tenant alone, and a customer's
page cost grew with the tenant's bookings (11 ms a listing at 20,000: the soak of
docs/performance.md). The rows answered stay the same: theirs, each once, latest start first."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from services.bookings import views
from services.bookings.statuses import PRE

TENANT, OTHER = "t-listing", "t-other"
ACCOUNT, TOKEN = str(uuid.uuid4()), "token-of-ada"


@pytest.fixture
def conn(tmp_path):
    engine = sa.create_engine(f"sqlite+pysqlite:///{tmp_path / 'views.sqlite3'}")
    views.metadata.create_all(engine)
    with engine.connect() as conn:
        yield conn
    engine.dispose()


def booking(n: int, tenant: str = TENANT, account: str | None = None, token: str | None = None, **extra):
    at = datetime(2027, 1, 1, tzinfo=UTC) + timedelta(days=n)
    return {
        "booking_id": str(uuid.UUID(int=n)),
        "tenant_id": tenant,
        "code": f"B{n}",
        "account_id": account,
        "email_token": token,
        "customer_erased": False,
        "status": "confirmed",
        "currency": "EUR",
        "total": 10,
        "amount_paid": 0,
        "starts_at": at,
        "ends_at": at + timedelta(hours=2),
        "placed_at": at - timedelta(days=30),
        "placed_position": n,
        "version": 1,
        "lines": [],
        "terms": {},
        "contact_fields": [],
        "form_fields": [],
        **extra,
    }


@pytest.mark.parametrize("with_pre", [False, True])
@pytest.mark.parametrize("queries", [views._CUSTOMER_BOOKINGS, views._CUSTOMER_BOOKING_VERSIONS])
def test_each_side_of_the_listing_is_one_index_search(conn, queries, with_pre):
    compiled = queries[with_pre].compile(conn.engine)
    values = {"tenant_id": TENANT, "account_id": ACCOUNT, "email_token": TOKEN}
    params = tuple(values.get(name, PRE) for name in compiled.positiontup)
    plan = [row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", params)]
    searches = [step for step in plan if step.startswith(("SEARCH", "SCAN"))]
    assert searches == [
        "SEARCH bookings USING INDEX ix_bookings_tenant_account (tenant_id=? AND account_id=?)",
        "SEARCH bookings USING INDEX ix_bookings_tenant_email_token (tenant_id=? AND email_token=?)",
    ], plan


def test_the_listing_answers_the_customers_bookings_each_once_latest_first(conn):
    rows = [
        booking(1, account=ACCOUNT),  # made under the account
        booking(2, token=TOKEN),  # with the verified email, before the account existed
        booking(3, account=ACCOUNT, token=TOKEN),  # both: once
        booking(4, account=str(uuid.uuid4()), token="someone-else"),
        booking(5, tenant=OTHER, account=ACCOUNT, token=TOKEN),  # another business's
        booking(6, account=ACCOUNT, status=PRE),  # a pre-booking: shown only where the tenant says
        *(booking(100 + n, token=f"guest-{n}") for n in range(50)),
    ]
    conn.execute(sa.insert(views.bookings), rows)
    mine = views.customer_bookings(conn, TENANT, uuid.UUID(ACCOUNT), TOKEN, with_pre=False)
    assert [row["code"] for row in mine] == ["B3", "B2", "B1"]
    with_pre = views.customer_booking_versions(conn, TENANT, uuid.UUID(ACCOUNT), TOKEN, with_pre=True)
    assert [booking_id for booking_id, _ in with_pre] == [str(uuid.UUID(int=n)) for n in (6, 3, 2, 1)]
    no_email = views.customer_bookings(conn, TENANT, uuid.UUID(ACCOUNT), None, with_pre=False)
    assert [row["code"] for row in no_email] == ["B3", "B1"]


def _plans_of(conn, run) -> list[list[str]]:
    """The SEARCH/SCAN steps of SQLite's plan for each SELECT of bookings that `run` executes."""
    statements = []

    def keep(_conn, _cursor, statement, parameters, _context, _many):
        if statement.lstrip().upper().startswith("SELECT") and "FROM bookings" in statement:
            statements.append((statement, parameters))

    sa.event.listen(conn.engine, "before_cursor_execute", keep)
    try:
        run()
    finally:
        sa.event.remove(conn.engine, "before_cursor_execute", keep)
    return [
        [
            row[3]
            for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            if row[3].startswith(("SEARCH", "SCAN"))
        ]
        for statement, parameters in statements
    ]


EACH_SIDE_ONE_SEARCH = [
    "SEARCH bookings USING INDEX ix_bookings_tenant_account (tenant_id=? AND account_id=?)",
    "SEARCH bookings USING INDEX ix_bookings_tenant_email_token (tenant_id=? AND email_token=?)",
]


def test_staff_looking_at_one_customer_and_an_erasure_search_each_side_through_an_index(conn):
    rows = [
        booking(1, account=ACCOUNT),
        booking(2, token=TOKEN),
        booking(3, tenant=OTHER, account=ACCOUNT, token=TOKEN),
        *(booking(100 + n, token=f"guest-{n}") for n in range(50)),
    ]
    conn.execute(sa.insert(views.bookings), rows)
    found: dict[str, object] = {}

    def staff() -> None:
        found["staff"] = views.staff_bookings(conn, TENANT, account=(ACCOUNT, TOKEN))

    def erasure() -> None:
        found["erasure"] = views.bookings_to_erase(conn, TENANT, uuid.UUID(ACCOUNT), 10_000, [TOKEN])

    for plan in _plans_of(conn, staff):  # how many match, then the page
        assert [step.replace("COVERING INDEX", "INDEX") for step in plan] == EACH_SIDE_ONE_SEARCH, plan
    staff_rows, total = found["staff"]
    assert [row["code"] for row in staff_rows] == ["B2", "B1"] and total == 2

    (plan,) = _plans_of(conn, erasure)
    assert [step.replace("COVERING INDEX", "INDEX") for step in plan] == EACH_SIDE_ONE_SEARCH, plan
    assert found["erasure"] == [uuid.UUID(int=1), uuid.UUID(int=2)]
