"""The event store of a service: an eventsourcing `Application` whose saves can carry positions.

Every service stores its own events with the eventsourcing library, in a SQLite file by default
or in PostgreSQL. What the library does not do out of the box, and what exactly-once needs, is
to record *several* tracking positions in the same transaction as the events they caused:

* the Kafka position of each partition a batch came from (to resume there after a crash), and
* the highest notification id seen from each upstream service per partition (to drop the copy
  an upstream relay re-publishes at a new offset after its own crash).

`save(..., positions=[Tracking(...), ...])` does that. A position is a single-row high-water
mark (the library's `SINGLE_ROW_TRACKING`): writing one that is not higher than the stored one
raises `IntegrityError` and nothing of the transaction is kept.

A high-water mark alone does not fence off a consumer that lost its partitions but is still
writing ("zombie"): its batch may have started below the new owner's position and still end
above it. So a position can also be *moved* (`moves=[(Tracking(...), previous), ...]`): the
write is a compare-and-set, refused (`PositionChanged`, an `IntegrityError`) unless the stored
value is still `previous`, checked inside the same transaction. And a follower that leads by
lease (`backbone.leadership`) passes `lease=(name, token)`: the transaction is refused
(`LeadershipLost`) unless that token is still the current one.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, MutableMapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import eventsourcing.domain as es
import psycopg
from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.persistence import IntegrityError, JSONTranscoder, StoredEvent, Tracking
from eventsourcing.popo import POPOProcessRecorder
from eventsourcing.postgres import PostgresFactory, PostgresProcessRecorder
from eventsourcing.sqlite import SQLiteProcessRecorder
from psycopg.sql import SQL, Identifier

from backbone import tracing
from backbone.codec import OrjsonTranscoder
from backbone.faults import probe_all
from backbone.personal import Personal, PersonalAsSealed, Vault, stored_ciphertext
from backbone.settings import StoreSettings
from backbone.sqltypes import creating_tables
from contracts.personal import Sealed

__all__ = ["LeadershipLost", "PositionChanged", "ServiceApplication", "Tracking", "store_env", "store_missing"]

A = TypeVar("A")

Lease = tuple[str, int]
"""A follower's leadership as its commits carry it: (lease name, fencing token)."""


class PositionChanged(IntegrityError):
    """A position was not where the writer's batch started: someone else moved it."""


class LeadershipLost(IntegrityError):
    """The writer's lease is no longer the current one: another instance leads now."""


class _RecordsPositions:
    """Mixin for the SQLite and PostgreSQL process recorders: write every position given, in
    the transaction of the events (plain high-water marks, compare-and-set moves, a lease)."""

    _tracking_table: str
    _leases_table: str | None = None

    def _insert_events(self, c: Any, stored_events: Sequence[Any], **kwargs: Any) -> Any:
        lease: Lease | None = kwargs.get("lease")
        if lease is not None:
            self._check_lease(c, lease)
        returning = super()._insert_events(c, stored_events, **kwargs)  # type: ignore[misc]
        for position in kwargs.get("positions", ()):
            self._insert_tracking(c, position)  # type: ignore[attr-defined]
        for position, previous in kwargs.get("moves", ()):
            self._move_tracking(c, position, previous)
        return returning

    def _move_tracking(self, c: Any, position: Tracking, previous: int) -> None:
        if position.notification_id <= previous:
            raise PositionChanged(f"{position.application_name}: {position.notification_id} <= {previous}")
        table = self._tracking_table
        params = {"name": position.application_name, "new": position.notification_id, "previous": previous}
        if previous == 0:  # never stored (or stored as 0)
            statement = (
                f"INSERT INTO {table} VALUES (%(name)s, %(new)s) ON CONFLICT (application_name) "  # noqa: S608
                f"DO UPDATE SET notification_id = %(new)s WHERE {table}.notification_id = 0 "
                "RETURNING notification_id"
            )
        else:
            statement = (
                f"UPDATE {table} SET notification_id = %(new)s WHERE application_name = %(name)s "  # noqa: S608
                "AND notification_id = %(previous)s RETURNING notification_id"
            )
        c.execute(self._placeholders(statement), params)
        if c.fetchone() is None:
            raise PositionChanged(
                f"{position.application_name} is no longer at {previous}, where this batch started"
            )

    def _check_lease(self, c: Any, lease: Lease) -> None:
        # FOR SHARE: a new leader's token bump waits for this transaction, and after it this
        # check fails; so a stalled ex-leader cannot commit once another instance leads.
        c.execute(
            self._placeholders("SELECT token FROM follower_leases WHERE name = %(name)s FOR SHARE"),
            {"name": lease[0]},
        )
        row = c.fetchone()
        token = None if row is None else (row["token"] if isinstance(row, dict) else row[0])
        if token != lease[1]:
            raise LeadershipLost(f"{lease[0]}: lease {lease[1]} is no longer current ({token})")

    def _placeholders(self, statement: str) -> str:
        return statement


_MANY = 500  # ids per statement: well under SQLite's limit on bound parameters


class SQLiteServiceRecorder(_RecordsPositions, SQLiteProcessRecorder):
    _tracking_table = "tracking"

    def _placeholders(self, statement: str) -> str:
        return (
            statement.replace("%(name)s", ":name")
            .replace("%(new)s", ":new")
            .replace("%(previous)s", ":previous")
        )

    def _check_lease(self, c: Any, lease: Lease) -> None:
        raise LeadershipLost("SQLite stores have no leases: one process per store")

    def select_events_of(self, originator_ids: Collection[UUID]) -> list[StoredEvent]:
        """Every stored event of these aggregates, by aggregate then version (one statement
        per 500 ids, in one read transaction)."""
        by_hex = {i.hex: i for i in originator_ids}  # (the rows' ids as asked: no UUID parsed per row)
        ids = list(by_hex)
        found: list[StoredEvent] = []
        with self.datastore.transaction(commit=False) as c:
            for first in range(0, len(ids), _MANY):
                chunk = ids[first : first + _MANY]
                placeholders = ",".join("?" * len(chunk))  # the ids are bound, never inlined
                statement = (
                    f"SELECT * FROM {self.events_table_name} WHERE originator_id IN "  # noqa: S608
                    f"({placeholders}) ORDER BY originator_id, originator_version"
                )
                c.execute(statement, chunk)
                found += [
                    StoredEvent(
                        originator_id=by_hex.get(row["originator_id"])
                        or self.convert_originator_id(row["originator_id"]),
                        originator_version=row["originator_version"],
                        topic=row["topic"],
                        state=row["state"],
                    )
                    for row in c.fetchall()
                ]
        return found


class PostgresServiceRecorder(_RecordsPositions, PostgresProcessRecorder):
    @property
    def _tracking_table(self) -> str:  # type: ignore[override]
        return f'"{self.datastore.schema}"."{self.tracking_table_name}"'

    def select_events_of(self, originator_ids: Collection[UUID]) -> list[StoredEvent]:
        """Every stored event of these aggregates, by aggregate then version (one statement)."""
        statement = SQL(
            "SELECT * FROM {schema}.{table} WHERE originator_id = ANY(%s) "
            "ORDER BY originator_id, originator_version"
        ).format(schema=Identifier(self.datastore.schema), table=Identifier(self.events_table_name))
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, [list(originator_ids)], prepare=True)
            return [
                StoredEvent(
                    originator_id=row["originator_id"],
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=bytes(row["state"]),
                )
                for row in curs.fetchall()
            ]


class MemoryServiceRecorder(POPOProcessRecorder):
    """The in-memory (POPO) recorder, for fast tests; same semantics, different hooks."""

    def _assert_uniqueness(self, stored_events: Sequence[Any], **kwargs: Any) -> None:
        if kwargs.get("lease") is not None:
            raise LeadershipLost("in-memory stores have no leases: one process per store")
        super()._assert_uniqueness(stored_events, **kwargs)
        for position in kwargs.get("positions", ()):
            self._assert_tracking_uniqueness(position)
        for position, previous in kwargs.get("moves", ()):
            stored = self._max_tracking_ids[position.application_name] or 0
            if stored != previous or position.notification_id <= previous:
                raise PositionChanged(f"{position.application_name} is at {stored}, not at {previous}")

    def _update_table(self, stored_events: Sequence[Any], **kwargs: Any) -> Any:
        returning = super()._update_table(stored_events, **kwargs)
        for position in kwargs.get("positions", ()):
            self._insert_tracking(position)
        for position, _ in kwargs.get("moves", ()):
            self._insert_tracking(position)
        return returning

    def select_events_of(self, originator_ids: Collection[UUID]) -> list[StoredEvent]:
        return [e for i in originator_ids for e in self.select_events(i)]


# How `PersonalAsSealed` stores a subject's id in an event's JSON (a hint to read keys ahead).
_SEALED_SUBJECT = re.compile(rb'"_type_":"personal","_data_":\{"s":"([0-9a-f-]{36})"')

RECENT_EVENTS = 20_000  # saved domain events kept for the followers (see `recorded_event`)

class PostgresTLSFactory(PostgresFactory):
    """eventsourcing's PostgreSQL factory, whose connections also take libpq's TLS parameters
    (`POSTGRES_SSLMODE`, `POSTGRES_SSLROOTCERT`, `POSTGRES_SSLCERT`, `POSTGRES_SSLKEY` of its
    environment): the library has no settings for them. Its pool opens on first use, so
    they are in place before any connection is made."""

    TLS_PARAMETERS = ("sslmode", "sslrootcert", "sslcert", "sslkey")

    def __init__(self, env: Any):
        super().__init__(env)
        connection = self.datastore.pool.kwargs
        assert isinstance(connection, dict)
        for name in self.TLS_PARAMETERS:
            if value := self.env.get(f"POSTGRES_{name.upper()}"):
                connection[name] = value


_RECORDERS = {
    "sqlite": ("eventsourcing.sqlite", SQLiteServiceRecorder),
    "postgres": (f"{__name__}:PostgresTLSFactory", PostgresServiceRecorder),
    "memory": ("eventsourcing.popo", MemoryServiceRecorder),
}


def store_env(store: StoreSettings, service: str) -> dict[str, str]:
    """The eventsourcing environment for one service's event store.

    Everything is given explicitly, so that a stray variable in the process environment (the
    library also reads `os.environ`) cannot point a service at another service's store.
    """
    module, recorder = _RECORDERS[store.kind]
    env = {
        "PERSISTENCE_MODULE": module,
        "PROCESS_RECORDER_TOPIC": f"{recorder.__module__}:{recorder.__qualname__}",
        "SINGLE_ROW_TRACKING": "y",
        "CREATE_TABLE": "y",
        "AGGREGATE_CACHE_MAXSIZE": str(store.aggregate_cache_size),
        "IS_SNAPSHOTTING_ENABLED": "y",
    }
    if store.kind == "sqlite":
        path = Path(store.data_dir) / f"{service}-events.sqlite3"
        path.parent.mkdir(parents=True, exist_ok=True)
        env.update(SQLITE_DBNAME=str(path), SQLITE_LOCK_TIMEOUT="30")
    elif store.kind == "postgres":
        env.update(
            POSTGRES_DBNAME=store.postgres_database(service),
            POSTGRES_HOST=store.postgres_host,
            POSTGRES_PORT=str(store.postgres_port),
            POSTGRES_USER=store.postgres_user,
            POSTGRES_PASSWORD=store.postgres_password.get_secret_value(),
            POSTGRES_POOL_SIZE=str(store.postgres_pool_size),
            POSTGRES_MAX_OVERFLOW=str(store.postgres_max_overflow),
            POSTGRES_CONNECT_TIMEOUT="10",
            POSTGRES_PRE_PING="y",
            POSTGRES_LOCK_TIMEOUT="10",
            POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT="30",
        )
        if store.postgres_schema:
            env["POSTGRES_SCHEMA"] = store.postgres_schema
        env.update({f"POSTGRES_{name.upper()}": value for name, value in store.postgres_tls().items()})
    return env


def events_table(store: StoreSettings, service: str) -> str:
    """The table the service's events are in (the library names it after the application in
    PostgreSQL; a SQLite file holds one service's store)."""
    return "stored_events" if store.kind == "sqlite" else f"{service}_events"


def store_missing(store: StoreSettings, service: str) -> str | None:
    """Why the service's event store cannot be the one the service runs on (it does not exist,
    or it has no tables: the service never started on it), or None if it looks right.

    Looks without creating anything, unlike the application, which creates what is missing:
    tools that only read or repair a store (the operator tool) must never open an empty new
    one in place of the service's, and call this first.
    """
    if store.kind == "memory":
        return None
    table = events_table(store, service)
    if store.kind == "sqlite":
        path = Path(store.data_dir) / f"{service}-events.sqlite3"
        if not path.is_file():
            return f"{service}: no event store at {path} (STORE=sqlite, DATA_DIR={store.data_dir})"
        try:
            with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
                found = db.execute(
                    "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)
                ).fetchone()
        except sqlite3.Error as error:
            return f"{service}: cannot read the event store {path}: {error}"
        return None if found else f"{service}: the event store {path} is empty (no {table} table)"
    dbname = store.postgres_database(service)
    where = f"PostgreSQL {store.postgres_host}:{store.postgres_port}"
    try:
        with psycopg.connect(
            host=store.postgres_host,
            port=store.postgres_port,
            user=store.postgres_user,
            password=store.postgres_password.get_secret_value(),
            dbname=dbname,
            connect_timeout=10,
            **store.postgres_tls(),
        ) as conn:
            found = conn.execute(
                "SELECT to_regclass(%s)", (f"{store.postgres_schema or 'public'}.{table}",)
            ).fetchone()
    except psycopg.OperationalError as error:
        reason = " ".join(str(error).split())
        if f'database "{dbname}" does not exist' in reason:
            return f"{service}: no event store: database {dbname!r} does not exist on {where}"
        return f"{service}: cannot reach its event store on {where}, database {dbname!r}: {reason}"
    if not found or found[0] is None:
        return f"{service}: the event store (database {dbname!r} on {where}) is empty (no {table} table)"
    return None


class ServiceApplication(Application[UUID]):
    """Base of the three services' applications.

    Adds: positions saved atomically with events; personal data sealed per subject in the
    store (`backbone.personal`: give it a `Vault`, and store `Personal` values); and a wake-up
    hook called after every save, so that the followers of the notification log in the same
    process (outbox relay, projections) react at once instead of at their next poll.
    """

    def __init__(self, env: dict[str, str] | None = None, vault: Vault | None = None):
        self.vault = vault or Vault("sqlite+pysqlite:///:memory:", type(self).name)
        # Creates the tables if missing, perhaps at the same moment as another instance.
        creating_tables(lambda: super(ServiceApplication, self).__init__(env))
        self.vault.on_erased(self.forget_erased)  # erased by another instance (shared vault)
        self._listeners: list[Callable[[], None]] = []
        self._caches: list[MutableMapping[UUID, Any]] = []  # of aggregates, beside the library's
        self._recent: OrderedDict[int, Any] = OrderedDict()  # notification id -> domain event
        self._recent_lock = threading.Lock()
        self._listeners_lock = threading.Lock()
        self._probes: dict[str, Callable[[], Any]] = {
            "event store": lambda: self.recorder.max_tracking_id("health-probe"),
            "vault": self.vault.ping,
        }

    def add_probe(self, name: str, probe: Callable[[], Any]) -> None:
        """Another store this service depends on (a read model, Redis): `probe()` raises when
        it does not answer. See `unreachable_stores`."""
        self._probes[name] = probe

    def unreachable_stores(self) -> list[str]:
        """The stores that do not answer a trivial query right now, each with the reason; empty
        when all are healthy. Asked after a failure, to tell an outage from a bad message
        (`backbone.faults`). Blocking."""
        return probe_all(self._probes)

    def construct_transcoder(self) -> JSONTranscoder:
        # The library's JSON, written faster (`backbone.codec`): the same bytes in the store.
        transcoder = OrjsonTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(PersonalAsSealed(self.vault))

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        # New subjects' keys in one vault transaction, rather than one each while sealing.
        events = [e for obj in objs if obj is not None for e in getattr(obj, "pending_events", (obj,))]
        if not tracing.enabled():
            self.vault.create_keys(personal_subjects(events))
            return self._save(objs, kwargs)
        with tracing.span(f"{self.name.lower()} store save", attributes={"events": len(events)}):
            self.vault.create_keys(personal_subjects(events))
            return self._save(objs, kwargs)

    def _save(self, objs: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        """eventsourcing's `Application.save`, less its runtime-checked protocols: for each of
        our aggregates `ProcessingEvent.collect_events` asked `isinstance` of two `Protocol`s
        (which walks their members every time in Python 3.11), a tenth of the inbox's CPU."""
        processing: ProcessingEvent[UUID] = ProcessingEvent()
        for obj in objs:
            if isinstance(obj, es.BaseAggregate):
                processing.events.extend(obj.collect_events())
                processing.aggregates[obj.id] = obj
            else:  # a bare event, None, another kind of aggregate: the library's way
                processing.collect_events(obj)
        processing.saved_kwargs.update(kwargs)
        recordings = self._record(processing)
        self._take_snapshots(processing)
        self._notify(recordings)
        self.notify(processing.events)  # (deprecated in the library; still called by its save)
        return recordings

    def erase_subject(self, subject_id: UUID) -> None:
        """Destroy a subject's key here: its data in this store can no longer be read."""
        self.vault.erase(subject_id)
        self.forget_erased([subject_id])

    def forget_erased(self, subject_ids: Iterable[UUID]) -> None:
        """Subjects erased here or by their owner (keys topic): cached aggregates may still
        hold their plain values, so the cache starts afresh."""
        if not list(subject_ids):
            return
        if self.repository.cache is not None:
            self.repository.cache = type(self.repository.cache)(**_cache_args(self.repository.cache))
        for cache in self._caches:
            cache.clear()
        with self._recent_lock:
            self._recent.clear()

    def add_cache(self, cache: MutableMapping[UUID, Any]) -> None:
        """A cache of aggregates kept outside the repository (the inbox's): emptied with the
        repository's when subjects are erased."""
        self._caches.append(cache)

    def sealed(self, value: Personal | None) -> Sealed | None:
        """A personal value sealed for the bus (with the same subject key). A value whose
        subject is already erased goes out erased (empty ciphertext), not in the clear. A value
        that went through the store goes out with the ciphertext stored for it
        (`stored_ciphertext`): one AES-GCM seal fewer per value relayed."""
        if value is None:
            return None
        if value.value is None or self.vault.is_erased(value.subject_id):
            return Sealed(subject_id=value.subject_id, ciphertext="")
        ciphertext = stored_ciphertext(value)
        if ciphertext:
            return Sealed(subject_id=value.subject_id, ciphertext=ciphertext)
        return self.vault.seal(value.subject_id, value.value)

    def close(self) -> None:
        self._until_store_idle()
        super().close()
        self.vault.close()

    def _until_store_idle(self, patience: float = 10.0) -> None:
        """Wait (a little) for statements still running in worker threads: a task cancelled
        at shutdown cannot stop the thread it handed work to (`asyncio.to_thread`), and closing
        a SQLite connection under a running statement can crash the process."""
        pool = getattr(getattr(self.recorder, "datastore", None), "pool", None)
        deadline = time.monotonic() + patience
        while getattr(pool, "num_in_use", 0) and time.monotonic() < deadline:
            time.sleep(0.01)

    def construct_recorder(self) -> Any:
        # A process recorder: an application recorder that can also write tracking rows.
        recorder = self.factory.process_recorder()
        if isinstance(recorder, POPOProcessRecorder) and not isinstance(recorder, MemoryServiceRecorder):
            recorder = MemoryServiceRecorder()  # the POPO factory ignores PROCESS_RECORDER_TOPIC
        return recorder

    def load_many(
        self, ids: Collection[UUID], cache: MutableMapping[UUID, Any] | None = None
    ) -> dict[UUID, Any]:
        """The aggregates with these ids that exist, read with ONE query (not one per aggregate).

        `cache` (id -> aggregate as last committed) spares decoding and replaying what did not
        change: a cached aggregate is used when the store holds nothing newer than its version
        and is brought forward with only the newer events otherwise. Whatever is returned is
        popped from the cache: the caller changes it in place, and puts it back only once that
        is committed, so a cache never holds a change that was not stored."""
        if not ids:
            return {}
        stored: dict[UUID, list[StoredEvent]] = {}
        for record in self.recorder.select_events_of(ids):
            stored.setdefault(record.originator_id, []).append(record)
        found: dict[UUID, Any] = {}
        for aggregate_id, records in stored.items():
            aggregate = cache.pop(aggregate_id, None) if cache is not None else None
            if aggregate is not None and aggregate.version <= records[-1].originator_version:
                records = [r for r in records if r.originator_version > aggregate.version]
            else:  # not cached, or ahead of the store (a change that failed): replay all
                aggregate = None
            for record in records:
                aggregate = self.mapper.to_domain_event(record).mutate(aggregate)
            if aggregate is not None:
                found[aggregate_id] = aggregate
        if cache is not None:
            for aggregate_id in ids:  # gone from the store, or never there
                if aggregate_id not in stored:
                    cache.pop(aggregate_id, None)
        return found

    def save_with_positions(
        self,
        aggregates: Iterable[Any],
        positions: Sequence[Tracking],
        moves: Sequence[tuple[Tracking, int]] = (),
    ) -> Any:
        """Save aggregates with high-water marks (`positions`) and compare-and-set `moves`
        (position, where it must still be) in one transaction; `IntegrityError` if any fails."""
        return self.save(*aggregates, positions=list(positions), moves=list(moves))

    def position(self, name: str) -> int | None:
        """The stored high-water mark of one position, or None if never recorded."""
        return self.recorder.max_tracking_id(name)

    def record_position(
        self, position: Tracking, previous: int | None = None, lease: Lease | None = None
    ) -> None:
        """Advance one position on its own (no events): e.g. the outbox relay's. With
        `previous`, only from there (`PositionChanged` otherwise); with `lease`, only while
        that lease is current (`LeadershipLost`)."""
        if previous is None and lease is None:
            self.recorder.insert_tracking(position)
            return
        if previous is None:
            self.recorder.insert_events([], positions=[position], lease=lease)
        else:
            self.recorder.insert_events([], moves=[(position, previous)], lease=lease)

    def head(self) -> int:
        """The id of the last event in the notification log (0 when empty)."""
        return self.recorder.max_notification_id() or 0

    def find(self, cls: type[A], aggregate_id: UUID) -> A | None:
        """The aggregate of that id if it exists and is a `cls`; None otherwise."""
        try:
            aggregate = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        return aggregate if isinstance(aggregate, cls) else None

    def add_listener(self, listener: Callable[[], None]) -> None:
        with self._listeners_lock:
            self._listeners.append(listener)

    def recorded_events(self, notifications: Sequence[Any]) -> list[Any]:
        """The domain events of these notifications (see `recorded_event`), the keys of the
        personal data they hold read in one query first."""
        with self._recent_lock:
            known = {n.id: self._recent.get(n.id) for n in notifications}
        unknown = [n for n in notifications if known[n.id] is None]
        if unknown:
            self.vault.preload(
                UUID(m.decode()) for n in unknown for m in _SEALED_SUBJECT.findall(bytes(n.state))
            )
        return [known[n.id] or self.mapper.to_domain_event(n) for n in notifications]

    def recorded_event(self, notification: Any) -> Any:
        """The domain event a notification records. One saved by this process a moment ago is
        still in memory: the relay and the projections, which follow the log right behind the
        writer, then need not decode it (and open its personal data) again."""
        with self._recent_lock:
            event = self._recent.get(notification.id)
        return event if event is not None else self.mapper.to_domain_event(notification)

    def _notify(self, recordings: list[Any]) -> None:
        if recordings:
            with self._recent_lock:
                for recording in recordings:
                    self._recent[recording.notification.id] = recording.domain_event
                while len(self._recent) > RECENT_EVENTS:
                    self._recent.popitem(last=False)
            with self._listeners_lock:
                listeners = list(self._listeners)
            for listener in listeners:
                listener()


def _cache_args(cache: Any) -> dict[str, Any]:
    maxsize = getattr(cache, "maxsize", None)
    return {"maxsize": maxsize} if maxsize is not None else {}


_PLAIN = frozenset({str, int, float, bool, type(None), UUID, bytes})


def personal_subjects(events: Iterable[Any]) -> set[UUID]:
    """The subjects of the personal values (not erased) anywhere in these events' attributes:
    `backbone.personal.subjects_in` over each one's `vars`, without a generator per value
    (it was a twentieth of the inbox's CPU: every field of every event is looked at)."""
    found: set[UUID] = set()
    stack: list[Any] = [vars(event) for event in events]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind in _PLAIN:
            continue
        if kind is dict:
            stack.extend(value.values())
        elif isinstance(value, Personal):
            if value.value is not None:
                found.add(value.subject_id)
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list | tuple | set | frozenset):
            stack.extend(value)
    return found
