"""An email the notifier owes someone, from the event that asked for it to its delivery.

The id of an `Email` is derived from the event that caused it and the kind of email, so the
same event seen twice (redelivered, replayed) finds the email already there: it is queued once.

Sending it is the one effect outside our store. Each attempt is recorded *before* the SMTP
transaction starts and its result as soon as the server has answered, so after a crash an
email whose last attempt has no result is known to be "interrupted": it may or may not have
reached the server, and is sent again (same Message-ID) once the attempt's lease has run out.

    queued -> sending -> sent
                      -> retrying (a temporary failure; backoff) -> sending -> ...
                      -> parked (a permanent failure, or too many) -- retry by an operator --> queued
    queued/retrying/parked -> withdrawn (nothing left to send: recipient erased, link expired)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from backbone.domain import Aggregate, DomainError, event
from backbone.personal import Personal

_EMAIL_IDS = uuid5(NAMESPACE_URL, "urn:booking-accounts:notifier:emails")

QUEUED = "queued"
SENDING = "sending"
SENT = "sent"
RETRYING = "retrying"
PARKED = "parked"
WITHDRAWN = "withdrawn"

CUSTOMER = "customer"
STAFF = "staff"


@dataclass(frozen=True)
class DeliveryPolicy:
    """How hard we try: exponential backoff with a cap, then parked for an operator."""

    retry_base: timedelta = timedelta(seconds=30)
    retry_cap: timedelta = timedelta(hours=1)
    max_attempts: int = 8
    # How long an attempt may stay without a result before another sender may take the email
    # as interrupted (its sender died). Longer than any SMTP transaction can take.
    lease: timedelta = timedelta(minutes=5)

    def retry_delay(self, failures: int) -> timedelta:
        """30 s, 1 min, 2 min, ... up to the cap (with the defaults)."""
        return min(self.retry_base * 2 ** (failures - 1), self.retry_cap)


class NotParked(DomainError):
    code = "not_parked"


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
        audience: str,
        recipient: Personal | None,
        language: str,
        data: dict[str, Any],
        account_id: UUID | None,
        booking_id: UUID | None,
        erase_recipient_when_done: bool,
    ) -> None:
        self.source_event_id = source_event_id
        self.template = template
        self.tenant_id = tenant_id
        self.audience = audience  # "customer" or "staff" (the tenant's staff address)
        self.recipient = recipient  # None: a staff notice for a tenant without a staff address
        self.language = language
        self.data = data
        self.account_id = account_id  # what the delivery log files it under
        self.booking_id = booking_id
        # The recipient is the notifier's own copy of an erased customer's address (the
        # redaction confirmation): destroy it once the email needs it no more.
        self.erase_recipient_when_done = erase_recipient_when_done
        self.status = QUEUED
        self.attempts = 0
        self.attempts_before_retry = 0  # an operator's retry gives a fresh budget
        self.next_attempt_at: datetime | None = None
        self.lease_until: datetime | None = None
        self.last_error: str | None = None

    @property
    def message_id(self) -> str:
        """The RFC 5322 Message-ID, the same on every attempt: a copy sent after an
        interruption is recognisable as the same message by the receiving side."""
        return f"<{self.id}@booking-accounts.notifier>"

    @property
    def queued_at(self) -> datetime:
        return self.created_on

    def is_due(self, now: datetime) -> bool:
        if self.status == QUEUED:
            return True
        if self.status == RETRYING:
            return self.next_attempt_at is not None and now >= self.next_attempt_at
        if self.status == SENDING:  # interrupted: its sender never reported back
            return self.lease_until is not None and now >= self.lease_until
        return False

    # ------------------------------------------------------------------------ attempts

    def start_attempt(self, now: datetime, policy: DeliveryPolicy) -> None:
        self._record_attempt(
            attempt=self.attempts + 1,
            interrupted=self.status == SENDING,
            at=now,
            lease_until=now + policy.lease,
        )

    @event("AttemptStarted")
    def _record_attempt(self, attempt: int, interrupted: bool, at: datetime, lease_until: datetime) -> None:
        self.attempts = attempt
        self.status = SENDING
        self.lease_until = lease_until

    def mark_sent(self, attempt: int, server_reply: str, subject: str) -> None:
        if self.status == SENT:  # a late result of an attempt another sender took over
            return
        self._record_sent(attempt=attempt, server_reply=server_reply, subject=subject)
        self._release_recipient()

    @event("Sent")
    def _record_sent(self, attempt: int, server_reply: str, subject: str) -> None:
        self.status = SENT
        self.last_error = None
        self.lease_until = None

    def fail(self, attempt: int, error: str, permanent: bool, now: datetime, policy: DeliveryPolicy) -> None:
        if self.status != SENDING or attempt != self.attempts:
            return  # a late result of an attempt another sender took over
        failures = attempt - self.attempts_before_retry
        if permanent or failures >= policy.max_attempts:
            self._park(attempt=attempt, error=error)
            self._release_recipient()
        else:
            self._record_failure(attempt=attempt, error=error, retry_at=now + policy.retry_delay(failures))

    @event("AttemptFailed")
    def _record_failure(self, attempt: int, error: str, retry_at: datetime) -> None:
        self.status = RETRYING
        self.last_error = error
        self.next_attempt_at = retry_at
        self.lease_until = None

    @event("Parked")
    def _park(self, attempt: int, error: str) -> None:
        self.status = PARKED
        self.last_error = error
        self.next_attempt_at = None
        self.lease_until = None

    def withdraw(self, reason: str) -> None:
        """Nothing to send any more (the recipient was erased, the link expired)."""
        if self.status in (SENT, WITHDRAWN):
            return
        self._record_withdrawal(reason=reason)
        self._release_recipient()

    @event("Withdrawn")
    def _record_withdrawal(self, reason: str) -> None:
        self.status = WITHDRAWN
        self.last_error = reason
        self.next_attempt_at = None
        self.lease_until = None

    # ----------------------------------------------------------------------- operators

    def retry(self, by: str, recipient: Personal | None = None) -> None:
        """An operator sends a parked email again, with a fresh budget of attempts (and, for a
        staff notice that had no address, the tenant's address as it is now)."""
        if self.status != PARKED:
            raise NotParked(f"Only a parked email can be retried; this one is {self.status}.")
        self._record_retry(by=by, recipient=recipient if self.recipient is None else None)

    @event("RetryRequested")
    def _record_retry(self, by: str, recipient: Personal | None) -> None:
        self.status = QUEUED
        self.attempts_before_retry = self.attempts
        self.last_error = None
        if recipient is not None:
            self.recipient = recipient

    def _release_recipient(self) -> None:
        if self.erase_recipient_when_done and self.recipient is not None:
            self._schedule_erasure(subject_id=self.recipient.subject_id)

    @event("RecipientErasureDue")
    def _schedule_erasure(self, subject_id: UUID) -> None:
        self.erase_recipient_when_done = False
