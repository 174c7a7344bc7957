"""Customers on the HTTP API, in memory, with a clock the test moves: the listing's
eligibility and links, the two-step cancellation with every way it can go wrong, terms frozen
per booking, modifications, the booking's history, and who may use the endpoints at all."""

from __future__ import annotations

import uuid
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from tests.support.bookings import command, pay, place
from tests.unit.bookings.conftest import TENANT


async def book(harness, session=None, *, days=7.0, email="ada@example.com", **fields):
    body = place(TENANT, email, starts_at=harness.now + timedelta(days=days), **fields)
    await harness.send(body)
    assert harness.outcome(body)["outcome"] == "accepted", harness.outcome(body)
    return body["booking_id"]


async def listing(http, session):
    response = await http.get("/v1/me/bookings", headers=http.headers_for(session))
    assert response.status_code == 200, response.text
    return {b["booking_id"]: b for b in response.json()}


async def test_the_cancel_link_shows_only_when_the_rules_allow(harness, http):
    await harness.hear(
        harness.accounts.settings(
            allow_cancel=True,
            cancel_cutoff={"amount": 2, "unit": "days"},
            blocking_statuses=["PAID"],
            timezone="Europe/Vienna",
        )
    )
    ada = await harness.customer()
    tomorrow = await book(harness, days=1)
    next_week = await book(harness, days=7)
    paid = await book(harness, days=7, status="PAID", paid="105.00")

    bookings = await listing(http, ada)
    assert bookings[tomorrow]["cancel"]["reason_code"] == "cutoff_passed"
    assert "cancel" not in bookings[tomorrow]["links"]
    assert bookings[next_week]["cancel"]["allowed"] is True and "cancel" in bookings[next_week]["links"]
    assert (
        bookings[paid]["cancel"]["reason_code"] == "status_blocks" and "cancel" not in bookings[paid]["links"]
    )
    # Modifying is off for this tenant: said on every booking, with no link.
    assert {b["modify"]["reason_code"] for b in bookings.values()} == {"setting_off"}
    assert not any("modify" in b["links"] for b in bookings.values())
    # The deadline is the end of the local day two days before the start.
    until = datetime.fromisoformat(bookings[next_week]["cancel"]["until"])
    starts = datetime.fromisoformat(bookings[next_week]["starts_at"])
    vienna = ZoneInfo("Europe/Vienna")
    assert until.utcoffset() == timedelta(0)  # instants are given in UTC
    assert until.astimezone(vienna).time() == time(0)
    assert until.astimezone(vienna).date() == starts.astimezone(vienna).date() - timedelta(days=1)


async def test_cancelling_is_ask_then_confirm_and_no_refund_happens(harness, http):
    await harness.hear(
        harness.accounts.settings(allow_cancel=True, cancel_cutoff={"amount": 2, "unit": "days"})
    )
    ada = await harness.customer()
    booking_id = await book(harness, status="PART", paid="30.00")
    headers = http.headers_for(ada)

    quote = await http.get(f"/v1/me/bookings/{booking_id}/cancellation-quote", headers=headers)
    assert quote.status_code == 200, quote.text
    quote = quote.json()
    assert (quote["amount_paid"], quote["refund_due"]) == ("30.00", "30.00")
    assert "not automatic" in quote["refund_note"]
    assert quote["policy"]["rule"]["cutoff"][0] == {"amount": 2, "unit": "days", "timezone": "UTC"}
    assert "until" in quote["policy"]["text"]
    confirm = quote["confirm"]
    assert confirm["body"] == {"booking_version": 1}

    done = await http.post(confirm["href"], headers=headers, json={**confirm["body"], "reason": "ill"})
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "STOP" and done.json()["refund_due"] == "30.00"
    booking = harness.booking(booking_id)
    assert booking.status == "STOP" and booking.amount_paid == 30  # nothing refunded here

    # A double submit: the same answer, one cancellation.
    again = await http.post(confirm["href"], headers=headers, json={**confirm["body"], "reason": "ill"})
    assert again.status_code == 200 and again.json() == done.json()
    assert len(harness.events(booking_id)) == 2
    # Asking again now: it is cancelled.
    closed = await http.get(f"/v1/me/bookings/{booking_id}/cancellation-quote", headers=headers)
    assert closed.status_code == 409 and closed.json()["code"] == "already_closed"


async def test_a_confirmation_after_a_staff_change_or_after_the_cutoff_is_refused(harness, http):
    await harness.hear(
        harness.accounts.settings(allow_cancel=True, cancel_cutoff={"amount": 24, "unit": "hours"})
    )
    ada = await harness.customer()
    headers = http.headers_for(ada)
    raced = await book(harness, days=7)
    late = await book(harness, days=2)

    quote = (await http.get(f"/v1/me/bookings/{raced}/cancellation-quote", headers=headers)).json()
    await harness.send(pay(TENANT, raced, "50.00"))  # the payment service, meanwhile
    refused = await http.post(quote["confirm"]["href"], headers=headers, json=quote["confirm"]["body"])
    assert refused.status_code == 409 and refused.json()["code"] == "booking_changed"
    assert harness.booking(raced).status == "PART"
    fresh = (await http.get(f"/v1/me/bookings/{raced}/cancellation-quote", headers=headers)).json()
    assert fresh["amount_paid"] == "50.00" and fresh["booking_version"] == 3

    quote = (await http.get(f"/v1/me/bookings/{late}/cancellation-quote", headers=headers)).json()
    harness.now += timedelta(days=1, minutes=1)  # the customer waited: the cut-off passed
    refused = await http.post(quote["confirm"]["href"], headers=headers, json=quote["confirm"]["body"])
    assert refused.status_code == 409 and refused.json()["code"] == "cutoff_passed"
    assert harness.booking(late).status == "PEND"


async def test_terms_are_frozen_per_booking_and_only_the_switch_applies_at_once(harness, http):
    accounts = harness.accounts
    await harness.hear(accounts.settings(allow_cancel=True, cancel_cutoff={"amount": 2, "unit": "days"}))
    ada = await harness.customer()
    booking_id = await book(harness, days=4)

    # Stricter later: a 7-day cut-off and PEND blocking do not apply to this booking.
    await harness.hear(
        accounts.settings(
            allow_cancel=True, cancel_cutoff={"amount": 7, "unit": "days"}, blocking_statuses=["PEND"]
        )
    )
    assert (await listing(http, ada))[booking_id]["cancel"]["allowed"] is True
    newer = await book(harness, days=4)
    assert (await listing(http, ada))[newer]["cancel"][
        "reason_code"
    ] == "status_blocks"  # placed under the new terms

    # More generous later: applies (a 1-hour cut-off lets a booking 1 day ahead be cancelled).
    harness.now += timedelta(days=3)
    assert (await listing(http, ada))[booking_id]["cancel"]["reason_code"] == "cutoff_passed"
    await harness.hear(accounts.settings(allow_cancel=True, cancel_cutoff={"amount": 1, "unit": "hours"}))
    assert (await listing(http, ada))[booking_id]["cancel"]["allowed"] is True

    # Switched off: applies at once, to every booking.
    await harness.hear(accounts.settings(allow_cancel=False))
    assert (await listing(http, ada))[booking_id]["cancel"]["reason_code"] == "setting_off"
    detail = (await http.get(f"/v1/me/bookings/{booking_id}", headers=http.headers_for(ada))).json()
    assert detail["terms"]["cancel_cutoff"] == {"amount": 2, "unit": "days"}  # still shown as placed


async def test_modifying_shows_the_new_total_then_applies_it(harness, http):
    await harness.hear(
        harness.accounts.settings(allow_modify=True, modify_cutoff={"amount": 2, "unit": "days"})
    )
    ada = await harness.customer()
    headers = http.headers_for(ada)
    booking_id = await book(harness, status="PAID", paid="105.00")
    later = (harness.now + timedelta(days=9)).isoformat()
    changes = {
        "contact": {"phone": "+43 660 1234567"},
        "form": {"pickup": "Hotel Post", "diet": "vegetarian"},
        "lines": [{"line": 0, "starts_at": later}, {"line": 1, "starts_at": later, "quantity": 3}],
    }

    preview = await http.post(
        f"/v1/me/bookings/{booking_id}/modification-preview", headers=headers, json=changes
    )
    assert preview.status_code == 200, preview.text
    preview = preview.json()
    assert (preview["total"], preview["balance_due"], preview["status"]) == ("117.50", "12.50", "PART")
    assert preview["booking_version"] == 1 and harness.booking(booking_id).version == 1  # nothing saved
    assert "Phone changed." in preview["changes"] and "Booking form answers changed." in preview["changes"]
    assert any("quantity 2 to 3" in change for change in preview["changes"])

    body = {**changes, "booking_version": preview["booking_version"]}
    done = await http.post(f"/v1/me/bookings/{booking_id}/modification", headers=headers, json=body)
    assert done.status_code == 200, done.text
    assert done.json()["changes"] == preview["changes"] and done.json()["booking_version"] == 3
    again = await http.post(f"/v1/me/bookings/{booking_id}/modification", headers=headers, json=body)
    assert again.status_code == 200 and again.json() == done.json()
    booking = harness.booking(booking_id)
    assert (booking.version, booking.total, booking.status) == (3, 117.5, "PART")
    assert booking.form["diet"].value == "vegetarian" and booking.customer["phone"].value == "+43 660 1234567"

    for bad, code in [
        ({"lines": [{"line": 5, "quantity": 1}]}, "invalid_change"),
        ({"remove_lines": [0, 1]}, "invalid_change"),
        (
            {"lines": [{"line": 0, "starts_at": (harness.now - timedelta(days=1)).isoformat()}]},
            "invalid_change",
        ),
        ({"form": {"pickup": "Hotel Post"}}, "nothing_to_change"),
    ]:
        refused = await http.post(
            f"/v1/me/bookings/{booking_id}/modification-preview", headers=headers, json=bad
        )
        assert (refused.status_code, refused.json()["code"]) == (422, code), refused.text
    not_email = await http.post(
        f"/v1/me/bookings/{booking_id}/modification-preview",
        headers=headers,
        json={"contact": {"email": "eve@example.com"}},
    )
    assert not_email.status_code == 422  # not a field customers have


async def test_the_history_says_who_did_what_when_under_which_policy(harness, http):
    await harness.hear(
        harness.accounts.settings(allow_cancel=True, cancel_cutoff={"amount": 2, "unit": "days"})
    )
    ada = await harness.customer()
    headers = http.headers_for(ada)
    booking_id = await book(harness)
    await harness.send(pay(TENANT, booking_id, "30.00"))
    await harness.send(
        command(
            "ChangeBookingStatus",
            TENANT,
            booking_id,
            status="HOLD",
            on_behalf_of={"kind": "staff", "id": "s9"},
        )
    )
    quote = (await http.get(f"/v1/me/bookings/{booking_id}/cancellation-quote", headers=headers)).json()
    await http.post(
        quote["confirm"]["href"], headers=headers, json={**quote["confirm"]["body"], "reason": "rain"}
    )

    detail = (await http.get(f"/v1/me/bookings/{booking_id}", headers=headers)).json()
    history = [(e["what"], e["by"]["label"]) for e in detail["history"]]
    assert history == [
        ("placed", "the business's systems"),
        ("payment_recorded", "the business's systems"),
        ("status_changed", "the business's systems"),  # PART, after the payment
        ("cancelled", "you"),
    ]
    assert detail["history"][0]["policy"]["cancel"] == {"allowed": True, "cutoff": "2 days"}
    cancelled = detail["history"][-1]
    assert "refund due 30.00 EUR" in cancelled["summary"] and "Your reason: rain" in cancelled["summary"]
    assert (
        cancelled["policy"]["from_booking_terms"] is True and cancelled["policy"]["rules_overridden"] is False
    )
    assert "s9" not in str(detail)  # staff ids are not the customer's business
    assert detail["contact"]["email"] == "ada@example.com" and detail["form"] == {"pickup": "Harbour gate"}


async def test_who_may_use_the_customer_endpoints(harness, http):
    accounts = harness.accounts
    await harness.hear(accounts.settings(allow_cancel=True, show_pre_bookings=False))
    ada = await harness.customer()
    eve = await harness.customer("eve@example.com")
    mine = await book(harness)
    pre = await book(harness, status="PRE")
    headers = http.headers_for(ada)

    assert set(await listing(http, ada)) == {mine}  # PRE hidden
    assert (await http.get(f"/v1/me/bookings/{pre}", headers=headers)).status_code == 404
    await harness.hear(accounts.settings(allow_cancel=True, show_pre_bookings=True))
    assert set(await listing(http, ada)) == {mine, pre}

    # Someone else's booking does not exist for Eve (404, never 403); nor does a made-up one.
    for path in ("", "/cancellation-quote"):
        assert (
            await http.get(f"/v1/me/bookings/{mine}{path}", headers=http.headers_for(eve))
        ).status_code == 404
    assert (await http.get(f"/v1/me/bookings/{uuid.uuid4()}", headers=headers)).status_code == 404
    assert await listing(http, eve) == {}

    # Sessions issued before a revocation are refused; a newer one works.
    before = harness.now - timedelta(seconds=30)  # the session above was issued a minute ago
    await harness.hear(accounts.sessions_revoked(ada.account_id, before))
    revoked = await http.get("/v1/me/bookings", headers=headers)
    assert revoked.status_code == 401 and revoked.json()["code"] == "session_revoked"
    issued = harness.now - timedelta(seconds=10)
    ada = type(ada)(ada.account_id, TENANT, "new", issued, issued + timedelta(hours=1))
    assert (await http.get("/v1/me/bookings", headers=http.headers_for(ada))).status_code == 200

    await harness.hear(accounts.archived(ada.account_id))
    archived = await http.get("/v1/me/bookings", headers=http.headers_for(ada))
    assert archived.status_code == 403 and archived.json()["code"] == "account_archived"
    await harness.hear(accounts.activated(ada.account_id))
    assert (await http.get("/v1/me/bookings", headers=http.headers_for(ada))).status_code == 200

    await harness.hear(accounts.settings(customer_logins_enabled=False))
    off = await http.get("/v1/me/bookings", headers=http.headers_for(ada))
    assert off.status_code == 403 and off.json()["code"] == "logins_disabled"

    assert (await http.get("/v1/me/bookings")).status_code == 401
    assert (
        await http.get("/v1/me/bookings", headers={"Authorization": "Bearer forged.token.here"})
    ).status_code == 401


async def test_bad_requests_get_a_clear_4xx(harness, http):
    await harness.hear(harness.accounts.settings(allow_cancel=True))
    ada = await harness.customer()
    headers = http.headers_for(ada)
    booking_id = await book(harness)
    url = f"/v1/me/bookings/{booking_id}/cancellation"
    assert (await http.post(url, headers=headers, json={})).status_code == 422  # no version
    assert (await http.post(url, headers=headers, content=b"{oops", params={})).status_code in (400, 422)
    assert (await http.post(url, headers=headers, json={"booking_version": 1, "extra": 1})).status_code == 422
    assert (await http.post(url, headers=headers, json={"booking_version": 0})).status_code == 422
    assert (await http.get("/v1/me/bookings/not-a-uuid", headers=headers)).status_code == 422
