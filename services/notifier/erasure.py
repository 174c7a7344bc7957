"""Erasing what the notifier holds about a subject, once the decision is in the event log.

Two kinds of recorded decisions mean "destroy a key here":

* `Customer.Redacted`: the account was redacted; its subject's key (our copy of the accounts
  service's key) goes at once;
* `Email.RecipientErasureDue`: an email that needed the notifier's own copy of an address (the
  redaction confirmation) is done with it (sent, parked or withdrawn); that copy's key goes.

The `Eraser` follows the notification log like the outbox relay does: it destroys the keys,
scrubs the read model, and only then records its position. A crash in between repeats the
erasures, which are idempotent; nothing is skipped.

Almost no batch holds an erasure, and recording the position after each one was a write
transaction of its own for every batch the service stores (three or four per cancellation).
So a batch with nothing to erase moves the position in memory only; it is recorded with the
next erasure, once `RECORD_EVERY_SECONDS` have passed, or when the eraser is idle (caught
up). A restart then reads again at most those batches, and finds nothing to erase in them.

Erasures decided elsewhere (another service erasing its subject, on its keys topic) reach the
vault through `SubjectKeyReceiver`, which calls `subjects_erased` for the same scrubbing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from uuid import UUID

from backbone.follower import Follower, Recorded
from backbone.logging import get_logger
from backbone.readmodel import ReadModel
from services.notifier import views
from services.notifier.application import Notifier
from services.notifier.directory import Customer
from services.notifier.domainmodel import Email

log = get_logger(__name__)


RECORD_EVERY_SECONDS = 5.0
"""How long the position of batches with nothing to erase may stay in memory only (above)."""


class Eraser(Follower):
    name = "notifier.eraser"

    def __init__(self, app: Notifier, read_model: ReadModel, batch_size: int = 500):
        super().__init__(app, batch_size)
        self.notifier = app
        self.read_model = read_model
        self.recorded = 0  # the position as stored (`position` may be ahead of it)
        self._recorded_at = time.monotonic()

    async def handle(self, batch: Sequence[Recorded]) -> None:
        subjects = [s for recorded in batch for s in erasures(recorded.event)]
        if subjects or time.monotonic() - self._recorded_at >= RECORD_EVERY_SECONDS:
            await self.blocking(self._erase, subjects, batch[-1].position)

    async def idle(self) -> None:
        if self.recorded < self.position and time.monotonic() - self._recorded_at >= RECORD_EVERY_SECONDS:
            await self.blocking(self._erase, [], self.position)

    def load_position(self) -> int:
        self.recorded = super().load_position()
        self._recorded_at = time.monotonic()
        return self.recorded

    def _erase(self, subjects: list[UUID], position: int) -> None:
        for subject_id in subjects:
            self.notifier.erase_subject(subject_id)
        views.scrub(self.read_model, subjects)
        self.commit_position(position)
        if subjects:
            log.info("subjects erased", subjects=len(subjects))

    def commit_position(self, position: int) -> None:
        """As `Follower.commit_position`, from the position as stored (`recorded`), which
        batches with nothing to erase leave behind the one in memory. (If it fails, the
        follower reads again from there.)"""
        self.position = self.recorded
        super().commit_position(position)
        self.recorded = position
        self._recorded_at = time.monotonic()

    def subjects_erased(self, subject_ids: Iterable[UUID]) -> None:
        """Erased by their owners (keys topics): forget what the read model and the
        aggregate cache hold about them."""
        ids = list(subject_ids)
        self.notifier.forget_erased(ids)
        views.scrub(self.read_model, ids)


def erasures(event: object) -> list[UUID]:
    if isinstance(event, Customer.Redacted | Email.RecipientErasureDue):
        return [event.subject_id]
    return []
