"""The bookings service's use cases for customers (commands from other services arrive
through `handlers`).

Every customer request names the booking version the customer was shown (from the listing,
a quote or a preview). Acting on another version is refused (`booking_changed`): whatever
changed meanwhile (a payment, staff moving it) the customer must see before confirming. The
same request sent twice (a double click, a retry after a timeout) gets the first answer again.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError
from eventsourcing.utils import register_topic

from backbone.context import Cause
from backbone.credentials import Session
from backbone.domain import NotFound
from backbone.eventstore import ServiceApplication
from backbone.personal import Vault
from services.bookings import lines as booking_lines
from services.bookings.customers import CustomerAccount
from services.bookings.domainmodel import Booking
from services.bookings.errors import Refused
from services.bookings.statuses import PRE, STOP
from services.bookings.tenants import TenantPolicy, TenantStatuses
from services.bookings.terms import Action, Rule, Terms, applicable_rule

# Aggregates that lived in `domainmodel` once: the events stored then name it in their topics.
# Registered here, where the application that loads them is defined, rather than imported
# back into `domainmodel` (which made the modules import each other).
for _moved in (CustomerAccount, TenantPolicy, TenantStatuses):
    register_topic(f"services.bookings.domainmodel:{_moved.__qualname__}", _moved)

Clock = Callable[[], datetime]
A = TypeVar("A")

_POLICIES_SEEN: contextvars.ContextVar[dict[str, TenantPolicy] | None] = contextvars.ContextVar(
    "bookings_policies_seen", default=None
)


@contextlib.contextmanager
def _one_look_at_policies() -> Iterator[None]:
    """Within it, `Bookings.policy` loads a tenant's policy once: a customer's confirmed
    cancellation asked for it twice (the customer admitted, then the rule), each a read of the
    event store behind the writers (issue 10 goal 3). One attempt of a use case (`_retrying`)."""
    token = _POLICIES_SEEN.set({})
    try:
        yield
    finally:
        _POLICIES_SEEN.reset(token)


class CustomerRefused(Exception):
    """The session's customer may not use the customer endpoints now; `code` says why
    (not_verified, session_revoked, account_archived, logins_disabled)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class Admissible(Protocol):
    """What decides whether a customer may use the customer endpoints: the account copy (the
    aggregate, or its row in the read model)."""

    tenant_id: str
    redacted: bool
    archived: bool

    @property
    def is_verified(self) -> bool: ...

    def session_revoked(self, issued_at: datetime) -> bool: ...


def admit(session: Session, account: Admissible | None, logins_enabled: Callable[[], bool]) -> None:
    """Refuse (`CustomerRefused`) the customer behind a valid session token unless they may use
    the customer endpoints now: known and verified here, not archived, the session not
    revoked, logins on. Asked last, `logins_enabled` may be costly."""
    if account is None or account.tenant_id != session.tenant_id or not account.is_verified:
        raise CustomerRefused("not_verified", "Verify your email address to see your bookings.")
    if account.redacted or account.session_revoked(session.issued_at):
        raise CustomerRefused("session_revoked", "This session has ended; please log in again.")
    if account.archived:
        raise CustomerRefused("account_archived", "This account is archived; contact the business.")
    if not logins_enabled():
        raise CustomerRefused("logins_disabled", "This business has customer accounts turned off.")


class ChangedMeanwhile(Exception):
    """The booking kept changing while a request was applied: look at it again."""


@dataclass(frozen=True)
class CustomerChanges:
    """What a customer asks to change (see `lines.revise` for the line changes)."""

    contact: dict[str, str] = field(default_factory=dict)  # name, phone
    form: dict[str, str | None] = field(default_factory=dict)
    line_changes: tuple[booking_lines.LineChange, ...] = ()
    extra_lines: tuple[booking_lines.ExtraLine, ...] = ()
    remove_lines: tuple[int, ...] = ()

    def fingerprint(self) -> str:
        body = json.dumps(asdict(self), sort_keys=True, default=str).encode()
        return hashlib.sha256(body).hexdigest()[:32]


class Quoted(Protocol):
    """What a quote shows of a booking: the aggregate has it, and so has a row of the read
    model (`reads.QuotedRow`)."""

    @property
    def id(self) -> UUID: ...
    @property
    def code(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def currency(self) -> str: ...
    @property
    def amount_paid(self) -> Decimal: ...
    @property
    def starts_at(self) -> datetime: ...
    @property
    def frozen_terms(self) -> Terms: ...


@dataclass(frozen=True)
class Quote:
    """What a customer is shown before confirming a cancellation."""

    booking: Quoted
    rule: Rule
    deadline: datetime


@dataclass(frozen=True)
class Preview:
    """A booking as it would be after a customer's changes (nothing saved)."""

    booking: Booking
    changes: list[str]
    rule: Rule


class Bookings(ServiceApplication):
    name = "bookings"
    snapshotting_intervals = {Booking: 50}  # noqa: RUF012

    def __init__(
        self,
        env: dict[str, str] | None = None,
        clock: Clock = lambda: datetime.now(UTC),
        vault: Vault | None = None,
    ):
        super().__init__(env, vault)
        self.clock = clock

    # ----------------------------------------------------------------- who is asking

    def customer(self, session: Session) -> CustomerAccount:
        """The customer behind a valid session token, if they may use the customer endpoints
        now: known and verified here, not archived, the session not revoked, logins on."""
        account = self._read_only(CustomerAccount, CustomerAccount.create_id(session.account_id))
        admit(session, account, lambda: self.policy(session.tenant_id).customer_logins_enabled)
        assert account is not None  # admitted
        return account

    def policy(self, tenant_id: str) -> TenantPolicy:
        seen = _POLICIES_SEEN.get()
        if seen is not None and tenant_id in seen:
            return seen[tenant_id]
        policy = self._read_only(TenantPolicy, TenantPolicy.create_id(tenant_id)) or TenantPolicy.default(
            tenant_id
        )
        if seen is not None:
            seen[tenant_id] = policy
        return policy

    def _read_only(self, cls: type[A], aggregate_id: UUID) -> A | None:
        """`find` for an aggregate that is only read, never changed: the repository's cached
        instance, not a deep copy of it (deep copies of the account and the tenant's rules were
        an eighth of a customer's confirmed cancellation, on the profile of `benchmarks.latency`).
        Whoever changes one (the inbox) loads its own."""
        try:
            found = self.repository.get(aggregate_id, deepcopy_from_cache=False)
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, cls) else None

    def custom_statuses(self, tenant_id: str) -> dict[str, Any]:
        statuses = self.find(TenantStatuses, TenantStatuses.create_id(tenant_id))
        return statuses.custom if statuses is not None else {}

    def customer_booking(self, session: Session, booking_id: UUID) -> Booking:
        """A booking the customer may see; NotFound otherwise (never "forbidden": whether
        someone else's booking exists is not theirs to learn)."""
        account = self.customer(session)
        booking = self.find(Booking, booking_id)
        if booking is None or not account.owns(booking):
            raise NotFound("No such booking.")
        if booking.status == PRE and not self.policy(session.tenant_id).show_pre_bookings:
            raise NotFound("No such booking.")
        return booking

    def rule(self, action: Action, booking: Booking) -> Rule:
        return applicable_rule(action, booking.frozen_terms, self.policy(booking.tenant_id).terms())

    # ----------------------------------------------------------------- cancel: ask, confirm

    def cancellation_quote(self, session: Session, booking_id: UUID) -> Quote:
        booking = self.customer_booking(session, booking_id)
        rule = self.rule("cancel", booking)
        refusal = rule.refusal(booking.status, booking.starts_at, self.clock())
        if refusal is not None:
            raise refusal
        return Quote(booking, rule, rule.deadline(booking.starts_at))

    def cancel_by_customer(
        self, session: Session, booking_id: UUID, booking_version: int, reason: str | None
    ) -> Booking:
        """Confirm a quote: the rules are checked again, now."""

        def attempt() -> Booking:
            booking = self.customer_booking(session, booking_id)
            if self._already_done(booking, booking_version, session, Booking.Cancelled):
                return booking
            self._same_version(booking, booking_version)
            booking.cancel(now=self.clock(), rule=self.rule("cancel", booking), reason=reason)
            self.save(booking)
            return booking

        return self._retrying(attempt)

    # ----------------------------------------------------------------- staff (api_staff.py)

    def staff_key(self, staff_id: UUID) -> Any:
        from services.bookings.staffkeys import StaffKey

        return self.find(StaffKey, staff_id)

    def staff_booking(self, tenant_id: str, booking_id: UUID) -> Booking:
        """A booking of the staff member's tenant; NotFound for another tenant's."""
        booking = self.find(Booking, booking_id)
        if booking is None or booking.tenant_id != tenant_id:
            raise NotFound("No such booking.")
        return booking

    def cancel_by_staff(
        self,
        tenant_id: str,
        booking_id: UUID,
        booking_version: int,
        reason: str | None,
        override: bool,
        refund_due: Decimal | None,
    ) -> Booking:
        """Staff cancel, at the version they saw: within the customer rules, or overriding them
        (recorded as such); the refund due is what was paid unless they say less."""

        def attempt() -> Booking:
            booking = self.staff_booking(tenant_id, booking_id)
            if (
                booking.status == STOP
                and booking.cancellation
                and booking.cancellation.get("based_on_version") == booking_version
            ):
                return booking  # the same confirmation again
            self._same_version(booking, booking_version)
            booking.cancel(
                now=self.clock(),
                rule=self.rule("cancel", booking),
                reason=reason,
                override=override,
                refund_due=refund_due,
            )
            self.save(booking)
            return booking

        return self._retrying(attempt)

    # ----------------------------------------------------------------- modify: preview, confirm

    def modification_preview(self, session: Session, booking_id: UUID, changes: CustomerChanges) -> Preview:
        booking = copy.deepcopy(self.customer_booking(session, booking_id))
        rule = self.rule("modify", booking)
        described = self._modify(booking, rule, changes)
        return Preview(booking, described, rule)

    def modify_by_customer(
        self, session: Session, booking_id: UUID, booking_version: int, changes: CustomerChanges
    ) -> Preview:
        def attempt() -> Preview:
            booking = self.customer_booking(session, booking_id)
            done = self._already_done(
                booking, booking_version, session, Booking.Modified, changes.fingerprint()
            )
            if done is not None:
                return Preview(booking, list(done.changes), self.rule("modify", booking))
            self._same_version(booking, booking_version)
            rule = self.rule("modify", booking)
            described = self._modify(booking, rule, changes)
            self.save(booking)
            return Preview(booking, described, rule)

        return self._retrying(attempt)

    def _modify(self, booking: Booking, rule: Rule, changes: CustomerChanges) -> list[str]:
        now = self.clock()
        refusal = rule.refusal(booking.status, booking.starts_at, now)
        if refusal is not None:
            raise refusal
        lines = None
        if changes.line_changes or changes.extra_lines or changes.remove_lines:
            lines = booking_lines.revise(
                booking.lines, changes.line_changes, changes.extra_lines, changes.remove_lines, now=now
            )
        described = booking.modify(
            now=now,
            rule=rule,
            customer=changes.contact or None,
            lines=lines,
            form=changes.form or None,
            request=changes.fingerprint(),
        )
        if not described:
            raise Refused("nothing_to_change", "These changes would leave the booking as it is.")
        return described

    # ----------------------------------------------------------------- history

    def booking_events(self, booking_id: UUID) -> list[Any]:
        return list(self.events.get(booking_id))

    # ----------------------------------------------------------------- helpers

    def _already_done(
        self,
        booking: Booking,
        version: int,
        session: Session,
        kind: type,
        request: str | None = None,
    ) -> Any:
        """The event this customer's same request already recorded, if this is a repeat."""
        if booking.version <= version:
            return None
        following = next(iter(self.events.get(booking.id, gt=version, limit=1)), None)
        if not isinstance(following, kind):
            return None
        if Cause.from_meta(following.meta).actor != f"customer:{session.account_id}":
            return None
        if request is not None and getattr(following, "request", None) != request:
            return None
        return following

    @staticmethod
    def _same_version(booking: Booking, version: int) -> None:
        if booking.version != version:
            raise Refused(
                "booking_changed",
                "The booking changed since you looked at it (e.g. a payment or a change by the "
                "business); please look at it again.",
            )

    @staticmethod
    def _retrying(attempt: Callable[[], A]) -> A:
        for _ in range(3):  # a concurrent save (e.g. a command): read again, check again
            try:
                with _one_look_at_policies():
                    return attempt()
            except IntegrityError:
                continue
        raise ChangedMeanwhile("The booking kept changing; please look at it again.")
