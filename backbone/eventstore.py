"""The event store of a service: an eventsourcing `Application` whose saves can carry positions.

Every service stores its own events with the eventsourcing library, in a SQLite file by default
or in PostgreSQL. What the library does not do out of the box, and what exactly-once needs, is
to record *several* tracking positions in the same transaction as the events they caused:

* the Kafka position of each partition a batch came from (to resume there after a crash), and
* the highest notification id seen from each upstream service per partition (to drop the copy
  an upstream relay re-publishes at a new offset after its own crash).

`save(..., positions=[Tracking(...), ...])` does that. A position is a single-row high-water
mark (the library's `SINGLE_ROW_TRACKING`): writing one that is not higher than the stored one
raises `IntegrityError` and nothing of the transaction is kept, which also fences off a
consumer that lost its partitions but is still writing ("zombie").
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.application import Application
from eventsourcing.persistence import JSONTranscoder, Tracking
from eventsourcing.popo import POPOProcessRecorder
from eventsourcing.postgres import PostgresFactory, PostgresProcessRecorder
from eventsourcing.sqlite import SQLiteProcessRecorder

from backbone.faults import probe_all
from backbone.personal import Personal, PersonalAsSealed, Vault, subjects_in
from backbone.settings import StoreSettings
from contracts.personal import Sealed

__all__ = ["ServiceApplication", "Tracking", "store_env", "store_missing"]


class _RecordsPositions:
    """Mixin for the SQLite and PostgreSQL process recorders: insert every position given."""

    def _insert_events(self, c: Any, stored_events: Sequence[Any], **kwargs: Any) -> Any:
        returning = super()._insert_events(c, stored_events, **kwargs)  # type: ignore[misc]
        for position in kwargs.get("positions", ()):
            self._insert_tracking(c, position)  # type: ignore[attr-defined]
        return returning


class SQLiteServiceRecorder(_RecordsPositions, SQLiteProcessRecorder):
    pass


class PostgresServiceRecorder(_RecordsPositions, PostgresProcessRecorder):
    pass


class MemoryServiceRecorder(POPOProcessRecorder):
    """The in-memory (POPO) recorder, for fast tests; same semantics, different hooks."""

    def _assert_uniqueness(self, stored_events: Sequence[Any], **kwargs: Any) -> None:
        super()._assert_uniqueness(stored_events, **kwargs)
        for position in kwargs.get("positions", ()):
            self._assert_tracking_uniqueness(position)

    def _update_table(self, stored_events: Sequence[Any], **kwargs: Any) -> Any:
        returning = super()._update_table(stored_events, **kwargs)
        for position in kwargs.get("positions", ()):
            self._insert_tracking(position)
        return returning


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
            POSTGRES_DBNAME=store.postgres_dbname or service,
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
    dbname = store.postgres_dbname or service
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
        super().__init__(env)
        self._listeners: list[Callable[[], None]] = []
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

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(PersonalAsSealed(self.vault))

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        # New subjects' keys in one vault transaction, rather than one each while sealing.
        events = [e for obj in objs for e in getattr(obj, "pending_events", (obj,))]
        self.vault.create_keys({s for e in events for s in subjects_in(vars(e))})
        return super().save(*objs, **kwargs)

    def erase_subject(self, subject_id: UUID) -> None:
        """Destroy a subject's key here: its data in this store can no longer be read."""
        self.vault.erase(subject_id)
        self.forget_erased([subject_id])

    def forget_erased(self, subject_ids: Iterable[UUID]) -> None:
        """Subjects erased here or by their owner (keys topic): cached aggregates may still
        hold their plain values, so the cache starts afresh."""
        if list(subject_ids) and self.repository.cache is not None:
            self.repository.cache = type(self.repository.cache)(**_cache_args(self.repository.cache))

    def sealed(self, value: Personal | None) -> Sealed | None:
        """A personal value sealed for the bus (with the same subject key). A value whose
        subject is already erased goes out erased (empty ciphertext), not in the clear."""
        if value is None:
            return None
        if value.value is None or self.vault.is_erased(value.subject_id):
            return Sealed(subject_id=value.subject_id, ciphertext="")
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

    def save_with_positions(self, aggregates: Iterable[Any], positions: Sequence[Tracking]) -> Any:
        return self.save(*aggregates, positions=list(positions))

    def position(self, name: str) -> int | None:
        """The stored high-water mark of one position, or None if never recorded."""
        return self.recorder.max_tracking_id(name)

    def record_position(self, position: Tracking) -> None:
        """Advance one position on its own (no events): e.g. the outbox relay's."""
        self.recorder.insert_tracking(position)

    def add_listener(self, listener: Callable[[], None]) -> None:
        with self._listeners_lock:
            self._listeners.append(listener)

    def _notify(self, recordings: list[Any]) -> None:
        if recordings:
            with self._listeners_lock:
                listeners = list(self._listeners)
            for listener in listeners:
                listener()


def _cache_args(cache: Any) -> dict[str, Any]:
    maxsize = getattr(cache, "maxsize", None)
    return {"maxsize": maxsize} if maxsize is not None else {}
