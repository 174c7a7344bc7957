"""The seed's scenarios on the real broker, the bookings service a real OS process: the cancel
link shows only when allowed; a 2-day cut-off blocks a booking starting tomorrow and allows one
next week; a PAID-blocking setting stops cancelling a paid booking; cancelling is ask then
confirm, sets the status, refunds nothing and tells staff the amount to refund; double submits,
a race with a staff change and a confirmation after the cut-off are handled; modifying gives
the new total and balance. And the reactions to accounts: "require login to book", PRE
bookings, revoked sessions, archived accounts, and nobody sees another's booking.

The accounts service is played on the bus (its events and keys, as its relay publishes them)
and its sessions are signed with the key the test System made for it.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support.bookings import AccountsFeed, BookingsBus, pay, place, session_token
from tests.support.system import System, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def service(tmp_path_factory, kafka_bootstrap_servers):
    system = System(tmp_path_factory.mktemp("self-service"), kafka_bootstrap_servers, smtp_port=1)
    system.start("bookings")
    bus = BookingsBus(kafka_bootstrap_servers, system, AccountsFeed("seed-tours"))
    yield system, bus
    system.stop()
    assert system.bookings.errors() == []


def customer(system, bus, tenant, email, *, age=timedelta(minutes=1)):
    """A verified customer (as accounts announces it) and their session header."""
    account_id = uuid.uuid4()
    bus.hear(*bus.accounts.claimed_and_verified(account_id, email, tenant))
    key_file = system.root / "accounts" / "session-signing-key.pem"
    headers = session_token(key_file, account_id, tenant, datetime.now(UTC) - age)
    wait_for(lambda: _get(system, "/v1/me/bookings", headers).status_code == 200, what="the customer known")
    return account_id, headers


def _get(system, path, headers):
    return httpx.get(f"{system.bookings.url}{path}", headers=headers, timeout=10)


def _post(system, path, headers, body):
    return httpx.post(f"{system.bookings.url}{path}", headers=headers, json=body, timeout=10)


def listing(system, headers, count):
    def ready():
        response = _get(system, "/v1/me/bookings", headers)
        found = response.json() if response.status_code == 200 else []
        return {b["booking_id"]: b for b in found} if len(found) == count else None

    return wait_for(ready, what=f"{count} bookings listed")


def test_the_seed_scenarios(service):
    system, bus = service
    tenant = "seed-tours"
    now = datetime.now(UTC)
    # For one booking the cut-off is an hour (its terms are frozen); it will pass during the test.
    bus.hear(
        bus.accounts.settings(
            tenant,
            allow_cancel=True,
            cancel_cutoff={"amount": 1, "unit": "hours"},
            allow_modify=True,
            modify_cutoff={"amount": 2, "unit": "days"},
            blocking_statuses=["PAID"],
            timezone="Europe/Vienna",
        )
    )
    _, ada = customer(system, bus, tenant, "ada@example.com")
    soon = place(tenant, "ada@example.com", starts_at=now + timedelta(hours=1, seconds=45))
    bus.send(soon)
    listing(system, ada, 1)
    soon_quote = _get(system, f"/v1/me/bookings/{soon['booking_id']}/cancellation-quote", ada)
    assert soon_quote.status_code == 200, f"quoted too late on a slow machine? {soon_quote.text}"

    # The business now asks for 2 days' notice: for the bookings placed from now on.
    bus.hear(
        bus.accounts.settings(
            tenant,
            allow_cancel=True,
            cancel_cutoff={"amount": 2, "unit": "days"},
            allow_modify=True,
            modify_cutoff={"amount": 2, "unit": "days"},
            blocking_statuses=["PAID"],
            timezone="Europe/Vienna",
        )
    )
    tomorrow = place(tenant, "ada@example.com", starts_at=now + timedelta(days=1))
    next_week = place(
        tenant, "ada@example.com", starts_at=now + timedelta(days=7), status="PART", paid="30.00"
    )
    paid = place(tenant, "ada@example.com", starts_at=now + timedelta(days=7), status="PAID", paid="105.00")
    raced = place(tenant, "ada@example.com", starts_at=now + timedelta(days=8))
    changed = place(tenant, "ada@example.com", starts_at=now + timedelta(days=9))
    bus.send(tomorrow, next_week, paid, raced, changed)
    bookings = listing(system, ada, 6)

    # The link shows only when allowed, with the reason when not.
    assert bookings[tomorrow["booking_id"]]["cancel"]["reason_code"] == "cutoff_passed"
    assert "cancel" not in bookings[tomorrow["booking_id"]]["links"]
    assert bookings[next_week["booking_id"]]["cancel"]["allowed"] is True
    assert "cancel" in bookings[next_week["booking_id"]]["links"]
    assert bookings[paid["booking_id"]]["cancel"]["reason_code"] == "status_blocks"
    assert "cancel" not in bookings[paid["booking_id"]]["links"]
    assert bookings[soon["booking_id"]]["cancel"]["allowed"] is True  # its own, frozen terms

    # Ask, then confirm: cancelled, nothing refunded, staff told the amount to refund.
    link = bookings[next_week["booking_id"]]["links"]["cancel"]
    quote = _get(system, link, ada).json()
    assert (quote["amount_paid"], quote["refund_due"]) == ("30.00", "30.00")
    assert "not automatic" in quote["refund_note"] and "Europe/Vienna" in quote["policy"]["text"]
    body = {**quote["confirm"]["body"], "reason": "ill"}
    done = _post(system, quote["confirm"]["href"], ada, body)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "STOP"
    again = _post(system, quote["confirm"]["href"], ada, body)  # a double submit
    assert again.status_code == 200 and again.json() == done.json()
    [cancelled] = wait_for(
        lambda: bus.events("BookingCancelled", booking_id=next_week["booking_id"]), what="BookingCancelled"
    )
    assert (cancelled["status_before"], cancelled["amount_paid"], cancelled["refund_due"]) == (
        "PART",
        "30.00",
        "30.00",
    )
    assert cancelled["cancelled_by"]["kind"] == "customer" and cancelled["rules_overridden"] is False
    after = bus.events(booking_id=next_week["booking_id"])
    assert [e["event_type"] for e in after] == ["BookingPlaced", "BookingCancelled"]  # no refund, once

    # A race with a staff change: the payment service records a payment after the quote.
    quote = _get(system, f"/v1/me/bookings/{raced['booking_id']}/cancellation-quote", ada).json()
    payment = pay(tenant, raced["booking_id"], "20.00")
    bus.send(payment)
    assert bus.answered(payment)[0]["outcome"] == "accepted"
    refused = _post(system, quote["confirm"]["href"], ada, quote["confirm"]["body"])
    assert refused.status_code == 409 and refused.json()["code"] == "booking_changed"

    # Modify: preview the new total and balance, confirm; BookingModified on the bus.
    changes = {
        "lines": [{"line": 1, "quantity": 4}],
        "contact": {"phone": "+43 660 1112223"},
        "form": {"diet": "vegan"},
    }
    path = f"/v1/me/bookings/{changed['booking_id']}"
    preview = _post(system, f"{path}/modification-preview", ada, changes).json()
    assert (preview["total"], preview["balance_due"]) == ("130.00", "130.00")
    result = _post(
        system, f"{path}/modification", ada, {**changes, "booking_version": preview["booking_version"]}
    )
    assert result.status_code == 200 and result.json()["changes"] == preview["changes"], result.text
    [modified] = wait_for(
        lambda: bus.events("BookingModified", booking_id=changed["booking_id"]), what="modified"
    )
    assert (modified["total"], modified["balance_due"]) == ("130.00", "130.00")
    assert (
        modified["modified_by"]["kind"] == "customer"
        and "Picnic lunch: quantity 2 to 4." in modified["changes"]
    )

    # The customer-visible history of the cancelled booking.
    history = _get(system, f"/v1/me/bookings/{next_week['booking_id']}", ada).json()["history"]
    assert [(h["what"], h["by"]["label"]) for h in history] == [
        ("placed", "the business's systems"),
        ("cancelled", "you"),
    ]
    assert history[-1]["policy"]["cutoff"][0] == {"amount": 2, "unit": "days", "timezone": "Europe/Vienna"}

    # The frozen 1-hour cut-off of the first booking passes; its old quote can no longer be used.
    deadline = datetime.fromisoformat(soon_quote.json()["policy"]["until"])
    time.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + 1)
    late = _post(system, soon_quote.json()["confirm"]["href"], ada, soon_quote.json()["confirm"]["body"])
    assert late.status_code == 409 and late.json()["code"] == "cutoff_passed"


def test_accounts_decide_who_books_and_who_sees(service):
    system, bus = service
    tenant = "members-only"
    start = datetime.now(UTC) + timedelta(days=5)
    bus.hear(bus.accounts.settings(tenant, allow_cancel=True, require_login_to_book=True))
    guest = place(tenant, "guest@example.com", starts_at=start)
    bus.send(guest)
    assert bus.answered(guest)[0]["reason_code"] == "login_required"

    ada_id, ada = customer(system, bus, tenant, "ada@example.com")
    _, eve = customer(system, bus, tenant, "eve@example.com")
    member = place(tenant, "ada@example.com", starts_at=start, account_id=ada_id)
    pre = place(tenant, "ada@example.com", starts_at=start, account_id=ada_id, status="PRE")
    bus.send(member, pre)
    assert [a["outcome"] for a in bus.answered(member, pre)] == ["accepted", "accepted"]
    assert set(listing(system, ada, 1)) == {member["booking_id"]}  # PRE hidden by default
    bus.hear(
        bus.accounts.settings(tenant, allow_cancel=True, require_login_to_book=True, show_pre_bookings=True)
    )
    assert set(listing(system, ada, 2)) == {member["booking_id"], pre["booking_id"]}

    # Another customer: not found, never forbidden.
    assert _get(system, f"/v1/me/bookings/{member['booking_id']}", eve).status_code == 404
    assert _get(system, f"/v1/me/bookings/{member['booking_id']}/cancellation-quote", eve).status_code == 404
    assert _get(system, "/v1/me/bookings", eve).json() == []

    # Logout elsewhere: sessions issued before are refused; a new one works.
    bus.hear(bus.accounts.sessions_revoked(ada_id, datetime.now(UTC) - timedelta(seconds=30), tenant=tenant))
    wait_for(lambda: _get(system, "/v1/me/bookings", ada).status_code == 401, what="the session refused")
    key_file = system.root / "accounts" / "session-signing-key.pem"
    fresh = session_token(key_file, ada_id, tenant, datetime.now(UTC) - timedelta(seconds=5))
    assert _get(system, "/v1/me/bookings", fresh).status_code == 200

    bus.hear(bus.accounts.archived(ada_id, tenant))
    wait_for(lambda: _get(system, "/v1/me/bookings", fresh).status_code == 403, what="archived refused")
    assert _get(system, "/v1/me/bookings", fresh).json()["code"] == "account_archived"
    archived = place(tenant, "ada@example.com", starts_at=start, account_id=ada_id)
    bus.send(archived)
    assert bus.answered(archived)[0]["reason_code"] == "account_archived"
    bus.hear(bus.accounts.activated(ada_id, tenant))
    wait_for(lambda: _get(system, "/v1/me/bookings", fresh).status_code == 200, what="active again")
