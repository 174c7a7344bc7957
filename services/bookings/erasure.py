"""Erasing a customer in bookings, when the accounts service redacts their account.

What goes: this service's copy of the account (its subject key: the account id) and the
customer details of every booking made under that account or with any address it verified,
the current one or an earlier one (each booking's details are their own subject: the booking
id). What stays: the bookings and their
amounts, for the books.

Crash-safe in three steps, each durable before the next:

1. the inbox records the decision (`CustomerAccount.Redacted`) with the message that asked;
2. this follower of the event log, once the read model has caught up with that decision,
   finds the bookings and records `Booking.CustomerErased` on each and `CustomerAccount.Erased`
   (with the list) in one transaction, so the read models scrub the personal columns and a
   rebuild scrubs them the same way;
3. it deletes the subject keys (idempotent), then records its position. Killed in between, it
   starts again from step 2 of the same decision: the list is already recorded, the deletions
   are simply done again. The outbox relay then publishes the erasures on
   `bookings.subject-keys`, so the services holding copies of those keys drop them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from backbone import context
from backbone.blindindex import BlindIndex
from backbone.context import Cause
from backbone.follower import Follower, Recorded
from backbone.logging import get_logger
from backbone.readmodel import ReadModel
from services.bookings import views
from services.bookings.application import Bookings
from services.bookings.customers import CustomerAccount

log = get_logger(__name__)


class Eraser(Follower):
    name = "bookings.eraser"

    def __init__(self, app: Bookings, read_model: ReadModel, projection: str, batch_size: int = 500):
        super().__init__(app, batch_size)
        self.app: Bookings = app
        self.read_model = read_model
        self.projection = projection  # the name of the projection that fills `views.bookings`
        self.index = BlindIndex(app.vault)  # the read model knows addresses by their tokens

    async def handle(self, batch: Sequence[Recorded]) -> None:
        for recorded in batch:
            if isinstance(recorded.event, CustomerAccount.Redacted):
                await self._until_projected(recorded.position)
                await self.blocking(self.erase, recorded)
        await self.blocking(self.commit_position, batch[-1].position)

    def erase(self, decision: Recorded) -> None:
        """Carry out one decision to erase (blocking; safe to repeat)."""
        account = self.app.repository.get(decision.event.originator_id)
        if account.erased_booking_ids is None:
            with self.read_model.engine.connect() as conn:
                booking_ids = views.bookings_to_erase(
                    conn,
                    account.tenant_id,
                    account.account_id,
                    decision.position,
                    [self.index.exact(account.tenant_id, email) for email in account.every_verified_email],
                )
            bookings = [self.app.repository.get(booking_id) for booking_id in booking_ids]
            cause = Cause.from_meta(decision.event.meta)
            with context.caused_by(
                cause.actor, account.tenant_id, cause.correlation_id, cause.causation_id, cause.traceparent
            ):
                for booking in bookings:
                    booking.erase_customer()
                account.record_erasure(booking_ids=booking_ids)
            self.app.save(account, *bookings)
        for booking_id in account.erased_booking_ids or ():
            self.app.erase_subject(booking_id)
        self.app.erase_subject(account.account_id)
        log.info(
            "customer erased",
            account_id=str(account.account_id),
            bookings=len(account.erased_booking_ids or ()),
        )

    async def _until_projected(self, position: int) -> None:
        """The bookings to erase are found in the read model: wait until it has every event
        up to the decision (it is a follower of the same log, usually milliseconds behind)."""
        # Its durable position, polled: what counts is what is in the tables.
        while await self.blocking(self.read_model.position, self.projection) < position:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
