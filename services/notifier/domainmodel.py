"""An email the notifier owes someone, from the event that asked for it to its delivery.

The id of an `Email` is derived from the event that caused it and the kind of email, so the
same event seen twice (redelivered, replayed) finds the email already there: it is queued once.

Sending it is the one effect outside our store. Each attempt is recorded *before* the SMTP
transaction's final step and its result right after, so after a crash an email whose last
attempt has no result is known to be "interrupted": it may or may not have reached the server.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from backbone.domain import Aggregate, event
from backbone.personal import Personal

_EMAIL_IDS = uuid5(NAMESPACE_URL, "urn:booking-accounts:notifier:emails")

QUEUED = "queued"
SENDING = "sending"
SENT = "sent"
RETRYING = "retrying"
PARKED = "parked"

MAX_ATTEMPTS = 8


def retry_delay(attempt: int) -> timedelta:
    """Exponential backoff with a cap: 30 s, 1 min, 2 min, ... up to 1 h."""
    return min(timedelta(seconds=30 * 2 ** (attempt - 1)), timedelta(hours=1))


class Email(Aggregate):
    @staticmethod
    def create_id(source_event_id: UUID, template: str) -> UUID:
        return uuid5(_EMAIL_IDS, f"{source_event_id}/{template}")

    @event("Queued")
    def __init__(
        self,
        source_event_id: UUID,
        template: str,
        tenant_id: str,
        recipient: Personal,
        language: str,
        data: dict[str, Any],
        about: str,
    ) -> None:
        self.source_event_id = source_event_id
        self.template = template
        self.tenant_id = tenant_id
        self.recipient = recipient
        self.language = language
        self.data = data
        self.about = about  # what the email is about, for the delivery log: "account:<id>"
        self.status = QUEUED
        self.attempts = 0
        self.next_attempt_at: datetime | None = None
        self.last_error: str | None = None

    @property
    def message_id(self) -> str:
        """The RFC 5322 Message-ID, the same on every attempt: a copy sent after an
        interruption is recognisable as the same message by the receiving side."""
        return f"<{self.id}@booking-accounts.notifier>"

    def is_due(self, now: datetime) -> bool:
        if self.status in (QUEUED, SENDING):
            return True
        return self.status == RETRYING and self.next_attempt_at is not None and now >= self.next_attempt_at

    def start_attempt(self, now: datetime) -> None:
        self.record_attempt(attempt=self.attempts + 1, interrupted=self.status == SENDING, at=now)

    @event("AttemptStarted")
    def record_attempt(self, attempt: int, interrupted: bool, at: datetime) -> None:
        self.attempts = attempt
        self.status = SENDING

    @event("Sent")
    def mark_sent(self, attempt: int, server_reply: str) -> None:
        self.status = SENT
        self.last_error = None

    def fail(self, attempt: int, error: str, permanent: bool, now: datetime) -> None:
        if permanent or attempt >= MAX_ATTEMPTS:
            self.park(attempt=attempt, error=error)
        else:
            self.record_failure(attempt=attempt, error=error, retry_at=now + retry_delay(attempt))

    @event("AttemptFailed")
    def record_failure(self, attempt: int, error: str, retry_at: datetime) -> None:
        self.status = RETRYING
        self.last_error = error
        self.next_attempt_at = retry_at

    @event("Parked")
    def park(self, attempt: int, error: str) -> None:
        self.status = PARKED
        self.last_error = error
        self.next_attempt_at = None
