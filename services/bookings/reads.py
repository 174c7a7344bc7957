"""The customers' read path: their bookings, and one booking in full, answered from the read
model (`views`) and never by replaying an aggregate from the event store.

Every request needs the customer's account copy (may they use these endpoints at all?) and
their tenant's rules and custom statuses (what may they do with each booking, and what is each
status called?). Those rows change rarely and are read on every request, so each process keeps
them in a `ReadCache`. The projection that fills the read model keeps it current
(`CachingProjection`): after each batch has committed it forgets the entries of the aggregates
that batch touched, and when it finds that its position moved under it (an operator's rebuild
switched the tables, or another instance of the service applied those events) it forgets them
all, since it cannot know what changed. A cached entry is therefore never older than what this
process's projection has applied, and with several instances on one read model, at most about
one poll interval of the projection older than the tables.

What this path shows may lag the event store by the projection's delay (usually milliseconds):
the version it shows is the one a customer confirms against, and every confirmation checks the
rules and that version again against the aggregate, inside its transaction
(`application.Bookings`). A lagging answer can at worst be refused with `booking_changed`.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import sqlalchemy as sa

from backbone.credentials import Session
from backbone.eventstore import Lease, ServiceApplication
from backbone.follower import Recorded
from backbone.http import NotFound
from backbone.personal import Vault
from backbone.readmodel import Project, Projection, ReadModel
from services.bookings import answers, views
from services.bookings.answers import BookingDetail, BookingSummary, HistoryEntry
from services.bookings.application import Clock, admit
from services.bookings.customers import CustomerAccount
from services.bookings.history import customer_history
from services.bookings.statuses import PRE, CustomStatus
from services.bookings.tenants import Rules, TenantPolicy, TenantStatuses
from services.bookings.terms import Terms

V = TypeVar("V")
_MISSING: Any = object()


class ReadCache:
    """Values keyed by the id of the aggregate they copy; the least recently used go first.

    Thread-safe. A value loaded while the projection was forgetting entries is not kept: its
    load may have read the rows from before the projection's commit (`generation`)."""

    def __init__(self, size: int = 10_000):
        self.size = size
        self._values: OrderedDict[UUID, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._generation = 0

    def get(self, key: UUID, load: Callable[[], V]) -> V:
        with self._lock:
            value = self._values.get(key, _MISSING)
            if value is not _MISSING:
                self._values.move_to_end(key)
                return value
            generation = self._generation
        value = load()
        with self._lock:
            if generation == self._generation and self.size > 0:
                self._values[key] = value
                if len(self._values) > self.size:
                    self._values.popitem(last=False)
        return value

    def forget(self, keys: Iterable[UUID]) -> None:
        with self._lock:
            self._generation += 1
            for key in keys:
                self._values.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._values.clear()

    def __len__(self) -> int:
        return len(self._values)


class CachingProjection(Projection):
    """The read model's projection, keeping a `ReadCache` of its rows current (see above)."""

    def __init__(
        self,
        app: ServiceApplication,
        read_model: ReadModel,
        name: str,
        project: Project,
        cache: ReadCache,
        **kwargs: Any,
    ):
        super().__init__(app, read_model, name, project, **kwargs)
        self.cache = cache

    def apply(
        self, batch: Sequence[Recorded], previous: int | None = None, lease: Lease | None = None
    ) -> None:
        try:
            super().apply(batch, previous, lease)
        finally:  # committed, or rolled back: either way nothing cached is newer than the tables
            self.cache.forget({recorded.event.originator_id for recorded in batch})

    def load_position(self) -> int:
        # At the start, and whenever the position moved under this projection: whatever moved
        # it changed the tables in ways this process did not see.
        self.cache.clear()
        return super().load_position()


@dataclass(frozen=True)
class AccountCopy:
    """A customer account as the read model has it (see `customers.CustomerAccount`)."""

    account_id: UUID
    tenant_id: str
    is_verified: bool
    verified_email_token: str | None  # the blind-index token of the verified address
    sessions_revoked_before: datetime | None
    archived: bool
    redacted: bool

    def session_revoked(self, issued_at: datetime) -> bool:
        return self.sessions_revoked_before is not None and issued_at < self.sessions_revoked_before

    def owns(self, row: dict[str, Any]) -> bool:
        """As `CustomerAccount.owns`, for a row of `views.bookings`."""
        if row["tenant_id"] != self.tenant_id or self.verified_email_token is None:
            return False
        return row["account_id"] == str(self.account_id) or row["email_token"] == self.verified_email_token


class CustomerReads:
    """What customers read, for the HTTP API (blocking: call it off the event loop)."""

    def __init__(self, read_model: ReadModel, clock: Clock, cache: ReadCache | None = None, *, vault: Vault):
        self.read_model = read_model
        self.clock = clock
        self.vault = vault  # opens the sealed columns of a customer's own booking
        # Without a cache kept current by the projection, every request reads the tables.
        self.cache = cache if cache is not None else ReadCache(size=0)
        self._projection: CachingProjection | None = None  # `until_shown` waits for its progress

    def projection(self, app: ServiceApplication, name: str, **kwargs: Any) -> CachingProjection:
        """The projection of `views` that keeps this cache current."""
        self._projection = CachingProjection(
            app, self.read_model, name, views.projector(self.vault), self.cache, **kwargs
        )
        return self._projection

    # ------------------------------------------------------------------ the answers

    def my_bookings(self, session: Session) -> list[BookingSummary]:
        """Every booking of the customer, latest start first (see `views.customer_bookings`)."""
        account, rules = self._customer(session)
        custom = self.custom_statuses(session.tenant_id)
        with self.read_model.engine.connect() as conn:
            rows = views.customer_bookings(
                conn,
                session.tenant_id,
                account.account_id,
                account.verified_email_token,
                with_pre=rules.show_pre_bookings,
            )
        now = self.clock()
        return [answers.row_summary(row, rules.terms, now, custom) for row in rows]

    def my_booking(self, session: Session, booking_id: UUID) -> BookingDetail:
        """One booking of the customer in full: contact, form answers, terms, history. Not
        found unless it is theirs (never "forbidden": whether someone else's booking exists is
        not theirs to learn), nor while a pre-booking the tenant does not show."""
        account, rules = self._customer(session)
        custom = self.custom_statuses(session.tenant_id)
        with self.read_model.engine.connect() as conn:
            row = views.booking_row(conn, booking_id)
            if row is None or not account.owns(row) or (row["status"] == PRE and not rules.show_pre_bookings):
                raise NotFound("No such booking.")
            events = views.history_rows(conn, booking_id)
        summary = answers.row_summary(row, rules.terms, self.clock(), custom)
        plain = views.opened(row, self.vault)
        events = views.opened_history(events, row["customer_subject"], self.vault)
        return BookingDetail(
            **summary.model_dump(),
            contact=plain["contact"],
            form=plain["form"],
            terms=Terms.from_dict(row["terms"]).as_dict(),
            history=[HistoryEntry(**e) for e in customer_history(events, session.account_id, custom)],
        )

    def until_shown(self, booking_id: UUID, version: int, patience: float = 2.0) -> bool:
        """Wait (a little) until the read model shows a booking at `version` or later: a
        customer who just changed it then sees their change on the next page. False if it
        did not within `patience` seconds (the projection is behind; it will show it later).

        Where the projection runs in this process, the wait ends as soon as it has handled its
        next batch (`Follower.wait_past`); where another instance leads it, the tables are
        looked at again with a growing pause."""
        deadline = time.monotonic() + patience
        pause = 0.002
        while True:
            projection = self._projection
            local = projection is not None and projection.leading
            seen = projection.position if projection is not None else 0  # before looking
            with self.read_model.engine.connect() as conn:
                shown = views.booking_version(conn, booking_id)
            if shown is not None and shown >= version:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if local and projection is not None:
                projection.wait_past(seen, remaining)
            else:
                time.sleep(min(pause, remaining))
                pause = min(pause * 2, 0.05)

    # ------------------------------------------------------------------ the cached rows

    def rules(self, tenant_id: str) -> Rules:
        """The tenant's rules; all off for a tenant nothing was heard of (`TenantPolicy.default`)."""
        policy_id = TenantPolicy.create_id(tenant_id)
        return self.cache.get(policy_id, lambda: self._load_rules(tenant_id))

    def custom_statuses(self, tenant_id: str) -> dict[str, CustomStatus]:
        statuses_id = TenantStatuses.create_id(tenant_id)
        return self.cache.get(statuses_id, lambda: self._load(views.tenant_custom_statuses, tenant_id))

    def account(self, account_id: UUID) -> AccountCopy | None:
        return self.cache.get(
            CustomerAccount.create_id(account_id), lambda: self._load(_account_copy, account_id)
        )

    def _customer(self, session: Session) -> tuple[AccountCopy, Rules]:
        account = self.account(session.account_id)
        rules = self.rules(session.tenant_id)
        admit(session, account, lambda: rules.customer_logins_enabled)
        assert account is not None  # admitted
        return account, rules

    def _load_rules(self, tenant_id: str) -> Rules:
        row = self._load(views.tenant_rules, tenant_id)
        return Rules(row["settings_version"], row["settings"]) if row else Rules(0, {})

    def _load(self, query: Callable[..., V], *args: Any) -> V:
        with self.read_model.engine.connect() as conn:
            return query(conn, *args)


def _account_copy(conn: sa.Connection, account_id: UUID) -> AccountCopy | None:
    row = views.customer_account(conn, account_id)
    if row is None:
        return None
    return AccountCopy(
        account_id=account_id,
        tenant_id=row["tenant_id"],
        is_verified=bool(row["verified"]),
        verified_email_token=row["verified_email_token"],
        sessions_revoked_before=row["sessions_revoked_before"],
        archived=bool(row["archived"]),
        redacted=bool(row["redacted"]),
    )
