"""The customers' read path: their bookings, one booking in full and what cancelling it would
mean, answered from the read model (`views`) and never by replaying an aggregate from the event
store.

Every request needs the customer's account copy (may they use these endpoints at all?) and
their tenant's rules and custom statuses (what may they do with each booking, and what is each
status called?). Those rows change rarely and are read on every request, so each process keeps
them in a `ReadCache`, and so it does a booking's row and history for its page. The
projection that fills the read model keeps them current (`CachingProjection`): after each
batch has committed it forgets the entries of the aggregates that batch touched, and when it
finds that its position moved under it (an operator's rebuild switched the tables, or another
instance of the service applied those events) it forgets them all, since it cannot know what
changed. With several instances on one read model only one leads the projection; the others
keep serving reads, and each forgets what the leader applied by following the stored position
(`keep_caches_current`). A cached entry is therefore never older than what this process's
projection has applied, and on a standby at most about `STANDBY_INTERVAL` older than the tables.

What this path shows may lag the event store by the projection's delay (usually milliseconds):
the version it shows is the one a customer confirms against, and every confirmation checks the
rules and that version again against the aggregate, inside its transaction
(`application.Bookings`). A lagging answer can at worst be refused with `booking_changed`.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID

import sqlalchemy as sa
from pydantic import BaseModel

from backbone.blindindex import BlindIndex
from backbone.credentials import Session
from backbone.eventstore import Lease, ServiceApplication
from backbone.follower import Recorded
from backbone.http import NotFound
from backbone.logging import get_logger
from backbone.personal import Vault
from backbone.readmodel import Project, Projection, ReadModel
from services.bookings import answers, views
from services.bookings.answers import BookingDetail, BookingSummary, CancellationQuote, HistoryEntry
from services.bookings.application import Clock, Quote, admit
from services.bookings.customers import CustomerAccount
from services.bookings.history import customer_history
from services.bookings.statuses import PRE, CustomStatus
from services.bookings.tenants import Rules, TenantPolicy, TenantStatuses
from services.bookings.terms import Terms, applicable_rule

V = TypeVar("V")
_MISSING: Any = object()
log = get_logger(__name__)

STANDBY_INTERVAL = 0.25  # seconds: how far a standby instance's caches may lag the tables
# Summaries kept (`Summaries`): about 8 kB each (the model and its JSON), so 80 MB when full.
# They were 50,000 (400 MB, most of what the service would hold); a soak measured each
# booking's summary at 7.9 kB. 10,000 is as many as the booking rows the `ReadCache` keeps.
SUMMARIES = 10_000
STANDBY_MAX_GAP = 50_000  # events: past this, a standby forgets everything rather than read them

# The cache's keys, the ids of the aggregates the cached values copy: uuid5 hashes on every
# request otherwise (three a request, about 5 % of a read's CPU).
_policy_id = functools.lru_cache(maxsize=4096)(TenantPolicy.create_id)
_statuses_id = functools.lru_cache(maxsize=4096)(TenantStatuses.create_id)
_account_id = functools.lru_cache(maxsize=65_536)(CustomerAccount.create_id)


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
    """The read model's projection, keeping `ReadCache`s of its rows current (see above)."""

    def __init__(
        self,
        app: ServiceApplication,
        read_model: ReadModel,
        name: str,
        project: Project,
        caches: Sequence[ReadCache],
        **kwargs: Any,
    ):
        super().__init__(app, read_model, name, project, **kwargs)
        self.caches = caches

    def apply(
        self, batch: Sequence[Recorded], previous: int | None = None, lease: Lease | None = None
    ) -> None:
        try:
            super().apply(batch, previous, lease)
        finally:  # committed, or rolled back: either way nothing cached is newer than the tables
            touched = {recorded.event.originator_id for recorded in batch}
            for cache in self.caches:
                cache.forget(touched)

    def load_position(self) -> int:
        # At the start, and whenever the position moved under this projection: whatever moved
        # it changed the tables in ways this process did not see.
        for cache in self.caches:
            cache.clear()
        return super().load_position()

    async def keep_caches_current(self, interval: float = STANDBY_INTERVAL) -> None:
        """While another instance leads this projection, this one still answers reads from its
        caches: forget what the leader applied (`forget_applied`, every `interval`). An entry
        is therefore at most about `interval` older than the tables on a standby. The leader
        forgets on its own, as it applies (`apply`). A service worker (`bootstrap.py`), until
        cancelled; its queries run in this follower's own thread (`blocking`): the shared pool
        may be full of requests."""
        seen = await self.blocking(self.read_model.position, self.name)
        while True:
            await asyncio.sleep(interval)
            try:
                seen = await self.blocking(self.forget_applied, seen)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the read model is down: the readiness probe says so
                log.warning("standby cache keeper: read model unavailable", error=str(error))
                for cache in self.caches:
                    cache.clear()

    def forget_applied(self, seen: int) -> int:
        """Forget the entries of the aggregates whose events the projection applied since it
        was at `seen`, unless this instance leads it; give its stored position. The ids come
        from the log's index only (nothing decoded); a position that went back (a rebuild) or
        a gap too long to read forgets everything (blocking)."""
        stored = self.read_model.position(self.name)
        if stored == seen or self.leading:
            return stored
        touched: set[UUID] | None = None
        if seen < stored <= seen + STANDBY_MAX_GAP:
            notifications = self.app.recorder.select_notifications(
                start=seen, limit=stored - seen, stop=stored, inclusive_of_start=False
            )
            touched = {n.originator_id for n in notifications}
        for cache in self.caches:
            if touched is None:
                cache.clear()
            else:
                cache.forget(touched)
        return stored


@dataclass(frozen=True)
class QuotedRow:
    """A row of `views.bookings` as a quote shows it (`application.Quoted`)."""

    id: UUID
    code: str
    version: int
    status: str
    currency: str
    amount_paid: Decimal
    starts_at: datetime
    frozen_terms: Terms

    @classmethod
    def of(cls, row: dict[str, Any]) -> QuotedRow:
        return cls(
            UUID(row["booking_id"]),
            row["code"],
            row["version"],
            row["status"],
            row["currency"],
            row["amount_paid"],
            row["starts_at"],
            Terms.from_dict(row["terms"]),
        )


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


@dataclass(frozen=True)
class _Shown:
    """A booking's summary as answered, and what it was computed from (see `Summaries`)."""

    version: int
    rules: Rules
    custom: dict[str, CustomStatus]
    valid_until: datetime | None
    summary: BookingSummary
    json: bytes


class Summaries:
    """The customers' booking summaries, already shaped and serialised, the least recently used
    forgotten first. A listing shows the same bookings over and over; shaping and serialising
    them was a quarter of its CPU time.

    No projection needs to keep it current: an entry is used only for the booking's version
    the read model shows now, the very `Rules` and custom statuses objects the `ReadCache`
    holds now (the projection replaces those when the tenant changes them), and before the
    next instant at which a rule's verdict changes with time alone (`row_summary_until`).
    It holds nothing personal. Thread-safe."""

    def __init__(self, size: int = 50_000):
        self.size = size
        self._entries: OrderedDict[str, _Shown] = OrderedDict()
        self._lock = threading.Lock()

    def get(
        self, booking_id: str, version: int, rules: Rules, custom: dict[str, CustomStatus], now: datetime
    ) -> _Shown | None:
        with self._lock:
            shown = self._entries.get(booking_id)
            if shown is not None:
                self._entries.move_to_end(booking_id)
        if (
            shown is None
            or shown.version != version
            or shown.rules is not rules
            or shown.custom is not custom
            or (shown.valid_until is not None and now >= shown.valid_until)
        ):
            return None
        return shown

    def put(
        self, row: dict[str, Any], rules: Rules, custom: dict[str, CustomStatus], now: datetime
    ) -> _Shown:
        summary, valid_until = answers.row_summary_until(row, rules.terms, now, custom)
        shown = _Shown(
            row["version"], rules, custom, valid_until, summary, summary.model_dump_json().encode()
        )
        if self.size > 0:
            with self._lock:
                self._entries[row["booking_id"]] = shown
                if len(self._entries) > self.size:
                    self._entries.popitem(last=False)
        return shown

    def __len__(self) -> int:
        return len(self._entries)


class CustomerReads:
    """What customers read, for the HTTP API (blocking: call it through `answer`)."""

    def __init__(self, read_model: ReadModel, clock: Clock, cache: ReadCache | None = None, *, vault: Vault):
        self.read_model = read_model
        self.clock = clock
        self.vault = vault  # opens the sealed columns of a customer's own booking
        # Without a cache kept current by the projection, every request reads the tables.
        self.cache = cache if cache is not None else ReadCache(size=0)
        self.summaries = Summaries(size=SUMMARIES if cache is not None else 0)
        # A booking's row and history as the tables hold them (sealed: nothing in the clear),
        # for `my_booking`; every row of a booking changes only with its own events, so the
        # projection forgets them as it forgets the others.
        self.bookings = ReadCache(size=10_000 if cache is not None else 0)
        self._projection: CachingProjection | None = None  # `until_shown` waits for its progress
        # SQLite answers a cached read in a fraction of a millisecond and, in WAL mode, never
        # waits for the writer: the hop to the thread pool and back cost more CPU than the read
        # itself (about 300 µs a request, measured in process). PostgreSQL's answers cross
        # the network, so they stay off the event loop.
        self.on_the_loop = read_model.engine.dialect.name == "sqlite"

    def projection(self, app: ServiceApplication, name: str, **kwargs: Any) -> CachingProjection:
        """The projection of `views` that keeps this cache current."""
        self._projection = CachingProjection(
            app, self.read_model, name, views.projector(self.vault), (self.cache, self.bookings), **kwargs
        )
        return self._projection

    # ------------------------------------------------------------------ the answers

    async def answer(self, read: Callable[..., V], *args: Any) -> V:
        """Run a read of this class (`read(*args)`) for a request: on the event loop itself
        when the read model is SQLite (`on_the_loop`), else in the thread pool."""
        if self.on_the_loop:
            return read(*args)
        return await asyncio.to_thread(read, *args)

    def my_bookings(self, session: Session) -> list[BookingSummary]:
        """Every booking of the customer, latest start first (see `views.customer_bookings`)."""
        return [shown.summary for shown in self._my_summaries(session)]

    def my_bookings_json(self, session: Session) -> bytes:
        """`my_bookings` as the JSON array the API answers."""
        return b"[" + b",".join(shown.json for shown in self._my_summaries(session)) + b"]"

    def _my_summaries(self, session: Session) -> list[_Shown]:
        account, rules = self._customer(session)
        custom = self.custom_statuses(session.tenant_id)
        now = self.clock()
        with self.read_model.engine.connect() as conn:
            which = views.customer_booking_versions(
                conn,
                session.tenant_id,
                account.account_id,
                account.verified_email_token,
                with_pre=rules.show_pre_bookings,
            )
            shown = {
                booking_id: self.summaries.get(booking_id, version, rules, custom, now)
                for booking_id, version in which
            }
            missing = [booking_id for booking_id, found in shown.items() if found is None]
            rows = views.summary_rows(conn, missing)
        for booking_id in missing:
            row = rows.get(booking_id)
            if row is not None:  # (gone since: a rebuild switched the tables meanwhile)
                shown[booking_id] = self.summaries.put(row, rules, custom, now)
        return [found for found in shown.values() if found is not None]

    def my_booking(self, session: Session, booking_id: UUID) -> BookingDetail:
        """One booking of the customer in full: contact, form answers, terms, history. Not
        found unless it is theirs (never "forbidden": whether someone else's booking exists is
        not theirs to learn), nor while a pre-booking the tenant does not show."""
        account, rules = self._customer(session)
        custom = self.custom_statuses(session.tenant_id)
        row, events = self._own_booking(account, rules, booking_id)
        now = self.clock()
        shown = self.summaries.get(row["booking_id"], row["version"], rules, custom, now)
        summary = (shown or self.summaries.put(row, rules, custom, now)).summary
        plain = views.opened(row, self.vault, only=("contact_sealed", "form_sealed"))  # (what it shows)
        events = views.opened_history(events, row["customer_subject"], self.vault)
        return BookingDetail.model_construct(  # (the summary's fields are valid already)
            **dict(summary),
            contact=plain["contact"],
            form=plain["form"],
            terms=Terms.from_dict(row["terms"]).as_dict(),
            history=[HistoryEntry(**e) for e in customer_history(events, session.account_id, custom)],
        )

    def cancellation_quote(self, session: Session, booking_id: UUID) -> CancellationQuote:
        """What cancelling would mean (step 1 of 2), from the read model: what
        `Bookings.cancellation_quote` tells from the aggregate (a test compares the two). The
        confirmation checks the rules and the version again, against the aggregate."""
        account, rules = self._customer(session)
        row, _ = self._own_booking(account, rules, booking_id)
        booking = QuotedRow.of(row)
        rule = applicable_rule("cancel", booking.frozen_terms, rules.terms)
        refusal = rule.refusal(booking.status, booking.starts_at, self.clock())
        if refusal is not None:
            raise refusal
        return answers.quote_answer(Quote(booking, rule, rule.deadline(booking.starts_at)))

    def _own_booking(self, account: AccountCopy, rules: Rules, booking_id: UUID) -> tuple[dict[str, Any], tuple]:
        """A booking's row and history rows, if the customer may see it: not found unless it
        is theirs (never "forbidden": whether someone else's booking exists is not theirs to
        learn), nor while a pre-booking the tenant does not show."""
        row, events = self.bookings.get(booking_id, lambda: self._load(_booking_and_history, booking_id))
        if row is None or not account.owns(row) or (row["status"] == PRE and not rules.show_pre_bookings):
            raise NotFound("No such booking.")
        return row, events

    def until_shown(self, booking_id: UUID, version: int, patience: float = 2.0) -> bool:
        """Wait (a little) until the read model shows a booking at `version` or later: a
        customer who just changed it then sees their change on the next page. False if it
        did not within `patience` seconds (the projection is behind; it will show it later).

        Where the projection runs in this process, the wait ends as soon as it has handled its
        next batch (`Follower.wait_past`); where another instance leads it, the tables are
        looked at again with a growing pause."""
        deadline = time.monotonic() + patience
        pause = 0.002
        with self.read_model.engine.connect() as conn:
            while True:
                projection = self._projection
                local = projection is not None and projection.leading
                seen = projection.position if projection is not None else 0  # before looking
                shown = conn.execute(_BOOKING_VERSION, {"booking_id": str(booking_id)}).scalar()
                conn.rollback()  # (the next look sees what was committed since)
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
        policy_id = _policy_id(tenant_id)
        return self.cache.get(policy_id, lambda: self._load_rules(tenant_id))

    def custom_statuses(self, tenant_id: str) -> dict[str, CustomStatus]:
        statuses_id = _statuses_id(tenant_id)
        return self.cache.get(statuses_id, lambda: self._load(views.tenant_custom_statuses, tenant_id))

    def account(self, account_id: UUID) -> AccountCopy | None:
        return self.cache.get(
            _account_id(account_id), lambda: self._load(_account_copy, account_id)
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


# `views.booking_version`, its statement made once: `until_shown` asks it once or twice for
# every confirmation, and building the statement cost as much as running it.
_BOOKING_VERSION = sa.select(views.bookings.c.version).where(
    views.bookings.c.booking_id == sa.bindparam("booking_id")
)


def _booking_and_history(conn: sa.Connection, booking_id: UUID) -> tuple[dict[str, Any] | None, tuple]:
    row = views.booking_row(conn, booking_id)
    return row, tuple(views.history_rows(conn, booking_id)) if row is not None else ()


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


class _StaffColumns(BaseModel):
    """What a staff list row shows beyond the summary (`api_staff.StaffBookingRow`'s own fields,
    in its order: a row's JSON is the summary's with these appended)."""

    customer_email: str | None
    customer_name: str | None
    account_id: UUID | None
    placed_at: datetime


class StaffReads:
    """What a tenant's staff list and search, for the HTTP API (blocking: call it off the
    event loop). The same cached rules, custom statuses and summaries as the customers' reads:
    nothing is replayed from the event store, and only the customer's email and name are opened
    of each row."""

    def __init__(self, reads: CustomerReads):
        self.reads = reads
        # The read model knows customers by keyed hashes only; the index keeps each tenant's key
        # once read (one made per request read the vault in a transaction of its own each time).
        self.index = BlindIndex(reads.vault)

    def bookings_json(
        self,
        tenant_id: str,
        *,
        status: str | None = None,
        starts_from: datetime | None = None,
        starts_before: datetime | None = None,
        customer: str | None = None,
        account_id: UUID | None = None,
        account_email: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> bytes:
        """`api_staff.StaffBookingList` as JSON: a page of the tenant's bookings, latest start
        first, and how many match in all (see `views.staff_bookings`)."""
        reads = self.reads
        rules, custom = reads.rules(tenant_id), reads.custom_statuses(tenant_id)
        index = self.index
        email_token = index.exact(tenant_id, account_email) if account_email else None
        with reads.read_model.engine.connect() as conn:
            rows, total = views.staff_bookings(
                conn,
                tenant_id,
                status=status,
                starts_from=starts_from,
                starts_before=starts_before,
                customer=customer,
                customer_tokens=index.query_tokens(tenant_id, customer) if customer else (),
                account=(str(account_id), email_token) if account_id else None,
                limit=limit,
                offset=offset,
            )
        now = reads.clock()
        shown = []
        for row in rows:
            summary = reads.summaries.get(row["booking_id"], row["version"], rules, custom, now)
            summary = summary or reads.summaries.put(row, rules, custom, now)
            person = views.opened(row, reads.vault, only=("email_sealed", "name_sealed"))
            extra = _StaffColumns(
                customer_email=person["email"],
                customer_name=person["name"],
                account_id=row["account_id"],
                placed_at=row["placed_at"],
            )
            shown.append(summary.json[:-1] + b"," + extra.model_dump_json().encode()[1:])
        return b'{"bookings":[' + b",".join(shown) + b'],"total":' + str(total).encode() + b"}"
