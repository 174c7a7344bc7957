"""Erasing a redacted customer in bookings, in memory: what goes, what stays, and a crash
between the recorded erasure and the key deletions."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from backbone.follower import read_log
from backbone.readmodel import Projection, ReadModel
from services.bookings import views
from services.bookings.customers import CustomerAccount
from services.bookings.domainmodel import Booking
from services.bookings.erasure import Eraser
from tests.support.bookings import place
from tests.unit.bookings.conftest import TENANT


async def run(eraser: Eraser, app) -> None:
    batch = read_log(app, eraser.load_position(), 10_000)
    if batch:
        await eraser.handle(batch)


def rows(read_model, vault) -> dict[str, dict]:
    """The bookings rows, sealed columns opened (ciphertexts differ between two projections)."""
    with read_model.engine.connect() as conn:
        found = conn.execute(sa.select(views.bookings).order_by(views.bookings.c.placed_position)).mappings()
        opened = {row["booking_id"]: views.opened(dict(row), vault) for row in found}
    for row in opened.values():
        row.pop("customer_subject")
    return opened


async def test_a_redacted_customer_is_erased_once_even_across_a_crash(harness, monkeypatch):
    app = harness.app
    early = place(TENANT, "ada@example.com")  # a guest booking, before the account existed
    await harness.send(early)
    ada = await harness.customer("ada@example.com")
    under_account = place(TENANT, "ada.work@example.com", account_id=ada.account_id)
    someone_else = place(TENANT, "eve@example.com")
    await harness.send(under_account, someone_else)
    await harness.hear(harness.accounts.redacted(ada.account_id))
    later = place(TENANT, "ada@example.com")  # after the decision: a new customer's booking
    await harness.send(later)

    eraser = Eraser(app, harness.read_model, "bookings.views")
    real_erase = app.erase_subject

    def crash(subject_id):
        raise OSError("killed")

    monkeypatch.setattr(app, "erase_subject", crash)
    with pytest.raises(OSError, match="killed"):
        await run(eraser, app)  # the erasure was recorded; no key was deleted
    assert app.position("bookings.eraser") is None
    erased = [uuid.UUID(early["booking_id"]), uuid.UUID(under_account["booking_id"])]
    assert app.repository.get(CustomerAccount.create_id(ada.account_id)).erased_booking_ids == erased
    assert all(not app.vault.is_erased(b) for b in erased)

    monkeypatch.setattr(app, "erase_subject", real_erase)
    await run(eraser, app)  # after the restart: the same decision, carried out
    await run(eraser, app)
    harness.project()

    for booking_id in erased:
        booking = harness.booking(booking_id)
        assert booking.email is None and str(booking.customer["name"]) == "[erased]"
        assert booking.total == 105 and booking.status == "PEND"  # the books keep it
        assert sum(isinstance(e, Booking.CustomerErased) for e in harness.events(booking_id)) == 1
        assert app.vault.is_erased(booking_id)
    assert app.vault.is_erased(ada.account_id)
    for kept in (someone_else, later):
        assert harness.booking(kept["booking_id"]).email is not None
    # The relay will publish the erasures of the booking subjects on bookings.subject-keys.
    assert {r.subject_id for r in app.vault.unpublished() if r.key is None} >= set(erased)

    # The read model is scrubbed, and rebuilding it from the log gives the same answers.
    scrubbed = rows(harness.read_model, app.vault)
    assert [scrubbed[str(b)]["email"] for b in erased] == [None, None]
    assert all(scrubbed[str(b)]["customer_erased"] for b in erased)
    rebuilt = ReadModel("sqlite+pysqlite:///:memory:", views.metadata)
    rebuilt.create()
    Projection(app, rebuilt, "bookings.views", views.projector(app.vault)).apply(read_log(app, 0, 10_000))
    assert rows(rebuilt, app.vault) == scrubbed
    with rebuilt.engine.connect() as conn:
        account = conn.execute(sa.select(views.customer_accounts)).mappings().all()
    assert [(a["verified_email_token"], a["redacted"]) for a in account] == [(None, True)]
    rebuilt.close()


async def test_an_erased_account_takes_no_new_booking(harness):
    ada = await harness.customer("ada@example.com")
    await harness.hear(harness.accounts.redacted(ada.account_id))
    body = place(TENANT, "ada@example.com", account_id=ada.account_id)
    await harness.send(body)
    assert harness.outcome(body)["reason_code"] == "account_erased"
