"""The notifier's use cases around one email's delivery (queuing happens in `handlers`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from backbone.eventstore import ServiceApplication
from backbone.personal import Vault
from services.notifier.domainmodel import Email

Clock = Callable[[], datetime]


class Notifier(ServiceApplication):
    name = "notifier"

    def __init__(
        self,
        env: dict[str, str] | None = None,
        clock: Clock = lambda: datetime.now(UTC),
        vault: Vault | None = None,
    ):
        super().__init__(env, vault)
        self.clock = clock

    def email(self, email_id: UUID) -> Email | None:
        try:
            email = self.repository.get(email_id)
        except AggregateNotFoundError:
            return None
        return email if isinstance(email, Email) else None

    def start_attempt(self, email_id: UUID) -> Email | None:
        """Record that we are about to send; None if the email is not due (any more), or if
        another sender took it first."""
        email = self.email(email_id)
        if email is None or not email.is_due(self.clock()):
            return None
        email.start_attempt(self.clock())
        try:
            self.save(email)
        except IntegrityError:
            return None
        return email

    def record_sent(self, email_id: UUID, attempt: int, server_reply: str) -> None:
        email = self.repository.get(email_id)
        email.mark_sent(attempt=attempt, server_reply=server_reply[:500])
        self.save(email)

    def record_failure(self, email_id: UUID, attempt: int, error: str, permanent: bool) -> None:
        email = self.repository.get(email_id)
        email.fail(attempt, error[:1000], permanent, self.clock())
        self.save(email)
