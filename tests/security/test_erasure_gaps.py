"""M4: what an erasure used to leave behind.

A customer who changed their address and then asked to be erased kept every booking made with
the earlier address: the bookings eraser matched the current verified address only."""

from __future__ import annotations

import uuid

from services.bookings.erasure import Eraser
from tests.support.bookings import place
from tests.unit.bookings.conftest import TENANT, harness  # noqa: F401 - bookings in memory
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
