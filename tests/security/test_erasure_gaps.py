"""M4: what an erasure used to leave behind.

A customer who changed their address and then asked to be erased kept every booking made with
the earlier address: the bookings eraser matched the current verified address only."""

from __future__ import annotations

import uuid

from services.bookings.erasure import Eraser
from tests.support.bookings import place
from tests.unit.bookings.conftest import TENANT, harness, http  # noqa: F401 - bookings in memory
from tests.unit.bookings.test_erasure import run


async def test_bookings_under_an_earlier_verified_address_are_erased_too(harness):  # noqa: F811
    old = place(TENANT, "ada.old@example.com")  # a guest booking with the first address
    await harness.send(old)
    ada = await harness.customer("ada.old@example.com")
    feed = harness.accounts
    key = str(ada.account_id)
    await harness.hear(
        feed._event(
            "EmailVerified",
            2,
            key,
            account_id=key,
            email=feed._sealed(ada.account_id, "ada.new@example.com"),
            name=feed._sealed(ada.account_id, "Customer"),
            first_time=False,
        )
    )
    new = place(TENANT, "ada.new@example.com")
    stranger = place(TENANT, "eve@example.com")
    await harness.send(new, stranger)

    await harness.hear(feed.redacted(ada.account_id))
    await run(Eraser(harness.app, harness.read_model, "bookings.views"), harness.app)
    harness.project()

    for erased in (old, new):
        assert harness.booking(erased["booking_id"]).email is None
        assert harness.app.vault.is_erased(uuid.UUID(erased["booking_id"]))
    assert harness.booking(stranger["booking_id"]).email == "eve@example.com"


async def test_a_cancellation_reason_is_neither_stored_nor_published_in_the_clear(harness, http):  # noqa: F811
    """The customer's free-text reason ("my divorce lawyer says...") was stored in the
    `Cancelled` event and published in `BookingCancelled` as plain text, out of an erasure's
    reach. It is sealed with the booking's customer details now, and erased with them."""
    from backbone.follower import read_log
    from services.bookings.integration import translator
    from tests.unit.bookings.test_self_service import book

    secret = f"my-private-reason-{uuid.uuid4().hex}"
    await harness.hear(harness.accounts.settings(allow_cancel=True))
    ada = await harness.customer()
    headers = http.headers_for(ada)
    booking_id = await book(harness)
    quote = (await http.get(f"/v1/me/bookings/{booking_id}/cancellation-quote", headers=headers)).json()
    done = await http.post(
        quote["confirm"]["href"], headers=headers, json={**quote["confirm"]["body"], "reason": secret}
    )
    assert done.status_code == 200, done.text

    stored = b"".join(bytes(n.state) for n in harness.app.recorder.select_notifications(start=1, limit=10_000))
    assert b"Kayak for two" in stored  # (stored readable: the check below could fail)
    assert secret.encode() not in stored
    records = read_log(harness.app, 0, 10_000)
    published = [out for recorded in records for out in translator(harness.app)(recorded)]
    [cancelled] = [out.message for out in published if out.message.event_type == "BookingCancelled"]
    assert secret not in cancelled.model_dump_json() and cancelled.reason is None
    assert harness.app.vault.open(cancelled.sealed_reason).value == secret  # (what the notifier does)

    detail = (await http.get(f"/v1/me/bookings/{booking_id}", headers=headers)).json()
    assert f"Your reason: {secret}" in detail["history"][-1]["summary"]  # the customer still sees it
    harness.app.erase_subject(uuid.UUID(str(booking_id)))
    assert harness.app.vault.open(cancelled.sealed_reason).value is None
