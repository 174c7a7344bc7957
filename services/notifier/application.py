"""The notifier's use cases: delivering emails (for the sender), retrying parked ones and
setting a tenant's branding (for staff and operators). Queuing happens in `handlers`.

The sender records the attempts of a whole batch in one transaction before any of them is
sent, and the results in one transaction per group of results as they come: two or three
commits per batch instead of two per email, and never a result held back longer than one
commit takes (see `sender`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from backbone.domain import NotFound
from backbone.eventstore import ServiceApplication
from backbone.logging import get_logger
from backbone.personal import Vault
from services.notifier.directory import StaffKey, Tenant
from services.notifier.domainmodel import STAFF, DeliveryPolicy, Email
from services.notifier.handlers import staff_address
from services.notifier.rendering import Branding

log = get_logger(__name__)

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Delivered:
    email_id: UUID
    attempt: int
    server_reply: str
    subject: str

    def apply(self, email: Email, now: datetime, policy: DeliveryPolicy) -> None:
        email.mark_sent(self.attempt, self.server_reply, self.subject)


@dataclass(frozen=True)
class NotDelivered:
    email_id: UUID
    attempt: int
    error: str
    permanent: bool

    def apply(self, email: Email, now: datetime, policy: DeliveryPolicy) -> None:
        email.fail(self.attempt, self.error, self.permanent, now, policy)


@dataclass(frozen=True)
class Withdrawn:
    email_id: UUID
    reason: str

    def apply(self, email: Email, now: datetime, policy: DeliveryPolicy) -> None:
        email.withdraw(self.reason)


Outcome = Delivered | NotDelivered | Withdrawn


class Notifier(ServiceApplication):
    name = "notifier"

    def __init__(
        self,
        env: dict[str, str] | None = None,
        clock: Clock = lambda: datetime.now(UTC),
        vault: Vault | None = None,
        policy: DeliveryPolicy | None = None,
        default_language: str = "en",
        default_business_name: str = "Bookings",
        portal_url: str | None = None,
    ):
        super().__init__(env, vault)
        self.portal_url = portal_url.rstrip("/") if portal_url else None
        self.clock = clock
        self.policy = policy or DeliveryPolicy()
        self.default_language = default_language
        self.default_business_name = default_business_name

    def login_url(self, tenant_id: str) -> str | None:
        """The portal's login page of the business (PORTAL_URL), for emails that say "log in"."""
        return f"{self.portal_url}/t/{tenant_id}/login" if self.portal_url else None

    # ---------------------------------------------------------------------- delivery

    def email(self, email_id: UUID) -> Email | None:
        return self.find(Email, email_id)

    def start_attempts(self, email_ids: Iterable[UUID]) -> list[Email]:
        """Record, in one transaction, an attempt for each of these emails that is due; return
        them. The emails are read with one query (`load_many`), not one each. Another sender
        that got there first makes us look again without them."""
        ids = list(email_ids)
        for _ in range(3):
            now = self.clock()
            found = self.load_many(ids)
            due = [e for e in map(found.get, ids) if isinstance(e, Email) and e.is_due(now)]
            for email in due:
                email.start_attempt(now, self.policy)
            if not due:
                return []
            try:
                self.save(*due)
                return due
            except IntegrityError:
                continue
        return []

    def record_outcomes(
        self, outcomes: Sequence[Outcome], attempted: dict[UUID, Email] | None = None
    ) -> None:
        """Record the results of attempts, in one transaction (each on its own if another
        sender changed one of the emails meanwhile). `attempted`: the emails as returned by
        `start_attempts`, which spares loading them again."""
        try:
            self._apply_outcomes(outcomes, attempted or {})
        except IntegrityError:
            for outcome in outcomes:
                try:
                    self._apply_outcomes([outcome])
                except IntegrityError:
                    log.warning("result not recorded: email changed", email_id=str(outcome.email_id))

    def _apply_outcomes(
        self, outcomes: Sequence[Outcome], attempted: dict[UUID, Email] | None = None
    ) -> None:
        now = self.clock()
        attempted = attempted if attempted is not None else {}
        known = {o.email_id: attempted.pop(o.email_id) for o in outcomes if o.email_id in attempted}
        missing = [o.email_id for o in outcomes if o.email_id not in known]
        known.update(self.load_many(missing))  # one query for those not given
        changed = []
        for outcome in outcomes:
            email = known.get(outcome.email_id)
            if isinstance(email, Email):
                outcome.apply(email, now, self.policy)
                changed.append(email)
        self.save(*changed)

    # --------------------------------------------------------------------- operators

    def retry(self, email_id: UUID, by: str, tenant_id: str | None = None) -> Email:
        """Send a parked email again. With `tenant_id`, only an email of that tenant (anything
        else is "not found": staff of one tenant never learn about another's emails)."""
        for _ in range(3):
            email = self.email(email_id)
            if email is None or (tenant_id is not None and email.tenant_id != tenant_id):
                raise NotFound("No such email.")
            recipient = None
            if email.audience == STAFF and email.recipient is None:
                recipient = staff_address(self.vault, self.tenant(email.tenant_id))
            email.retry(by, recipient)
            try:
                self.save(email)
                return email
            except IntegrityError:
                continue
        raise IntegrityError(f"email {email_id} kept changing while it was being retried")

    def email_history(self, email_id: UUID) -> list[dict[str, object]]:
        """The email's events as staff see them: what happened, when, by whom, without what
        is personal (recipient, content)."""
        return [
            {
                "what": type(event).__name__,
                "at": event.timestamp,
                "by": getattr(event, "by", None),
                "attempt": getattr(event, "attempt", None),
                "interrupted": getattr(event, "interrupted", None),
                "detail": getattr(event, "error", None)
                or getattr(event, "reason", None)
                or getattr(event, "server_reply", None),
            }
            for event in self.events.get(email_id)
        ]

    # ----------------------------------------------------------------------- tenants

    def tenant(self, tenant_id: str) -> Tenant:
        """The tenant as the notifier knows it (defaults for one it has never heard of)."""
        return self.find(Tenant, Tenant.create_id(tenant_id)) or Tenant(tenant_id=tenant_id)

    def change_branding(self, tenant_id: str, changes: dict[str, str | None], by: str) -> Tenant:
        for _ in range(3):  # the inbox may change the tenant (its time zone) at the same time
            tenant = self.tenant(tenant_id)
            tenant.change_branding(changes, by)
            try:
                self.save(tenant)
                return tenant
            except IntegrityError:
                continue
        raise IntegrityError(f"tenant {tenant_id} kept changing while its branding was being set")

    def branding(self, tenant: Tenant) -> Branding:
        settings = tenant.branding
        return Branding(
            business_name=settings.get("business_name") or self.default_business_name,
            reply_to=settings.get("reply_to"),
            footer=settings.get("footer"),
            timezone=tenant.timezone,
        )

    def staff_key(self, staff_id: UUID) -> StaffKey | None:
        """A staff member's API key, as accounts announced it (see backbone.auth)."""
        return self.find(StaffKey, staff_id)
