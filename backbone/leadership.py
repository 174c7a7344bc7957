"""Which instance runs a follower, when several instances of a service share one store.

A follower of the notification log (the outbox relay, a projection, an eraser) must run in
one place at a time: two relays publish every event twice and race for the position; two
projections fight over the read model. Kafka's consumer groups split the inbox's work by
partition; the notification log has no partitions, so its followers elect a leader instead.

On PostgreSQL, leadership is a session-level advisory lock (`pg_try_advisory_lock`, keyed by
the follower's name) held by one dedicated connection. When the leading process dies, its
connection drops and PostgreSQL releases the lock at once; the others retry every second, so
one of them takes over within seconds (TCP keepalives are set on the session, so a silently
vanished host is noticed within about 15 s too).

A lock alone does not stop a leader that stalled (a long GC pause, a frozen VM) and resumes
after another instance took over. So every leadership has a *fencing token*: the new leader
increments the follower's row in `follower_leases` right after taking the lock, and each
commit of a follower checks, in its own transaction, that the row still holds the token it
was elected with (`SELECT ... FOR SHARE`, see `backbone.eventstore`). A stalled ex-leader's
commit fails (`LeadershipLost`) and changes nothing; its follower then waits to lead again.

On SQLite (one process per store file, by nature: the file is local to one host and its
writers serialise) and in memory there is nothing to coordinate: `Sole` leadership always
holds, which is today's behaviour. Run one instance per SQLite store.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from typing import Any, Protocol

from backbone.eventstore import Lease
from backbone.logging import get_logger
from backbone.settings import StoreSettings

log = get_logger(__name__)


class Leadership(Protocol):
    """Whether this process may run one follower now, and the proof its commits carry."""

    name: str

    @property
    def held(self) -> bool: ...

    @property
    def lease(self) -> Lease | None: ...

    async def acquire(self, stopping: asyncio.Event) -> bool:
        """Wait until this process leads (True), or until `stopping` is set (False)."""
        ...

    async def release(self) -> None: ...


class Sole:
    """The only instance: always leads (SQLite and in-memory stores)."""

    def __init__(self, name: str):
        self.name = name

    @property
    def held(self) -> bool:
        return True

    @property
    def lease(self) -> Lease | None:
        return None

    async def acquire(self, stopping: asyncio.Event) -> bool:
        return not stopping.is_set()

    async def release(self) -> None:
        return None


def lock_key(name: str) -> int:
    """The advisory lock's key for a follower: a stable signed 64-bit hash of its name."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


class AdvisoryLock:
    """Leadership of one follower through a PostgreSQL advisory lock and a fencing token."""

    def __init__(
        self,
        conninfo: str,
        name: str,
        *,
        retry_interval: float = 1.0,
        check_interval: float = 1.0,
    ):
        self.conninfo = conninfo
        self.name = name
        self.key = lock_key(name)
        self.retry_interval = retry_interval
        self.check_interval = check_interval
        self._conn: Any = None
        self._token: int | None = None
        self._held = False
        self._watch: asyncio.Task[None] | None = None
        self._io = threading.Lock()  # one statement at a time on the dedicated connection

    @property
    def held(self) -> bool:
        return self._held

    @property
    def lease(self) -> Lease | None:
        return (self.name, self._token) if self._held and self._token is not None else None

    async def acquire(self, stopping: asyncio.Event) -> bool:
        waiting_logged = False
        while not stopping.is_set():
            try:
                token = await asyncio.to_thread(self._try_lock)
            except Exception as error:  # the database is down: keep trying, quietly
                log.warning("leadership: database unavailable", follower=self.name, error=str(error))
                await asyncio.to_thread(self._drop)
                token = None
            if token is not None:
                self._token, self._held = token, True
                self._watch = asyncio.create_task(self._watchdog(), name=f"{self.name}.lease")
                log.info("leading", follower=self.name, fencing=token)
                return True
            if not waiting_logged:
                log.info("another instance leads; standing by", follower=self.name)
                waiting_logged = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=self.retry_interval)
        return False

    async def release(self) -> None:
        self._held = False
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch
            self._watch = None
        await asyncio.to_thread(self._drop)  # closing the session releases the lock

    async def _watchdog(self) -> None:
        """While leading: check the session is alive and still holds the lock."""
        while self._held:
            await asyncio.sleep(self.check_interval)
            try:
                still = await asyncio.to_thread(self._still_held)
            except Exception as error:
                still = False
                log.warning("leadership: lost the lock's connection", follower=self.name, error=str(error))
            if not still:
                self._held = False
                await asyncio.to_thread(self._drop)
                log.warning("leadership lost", follower=self.name)

    # ------------------------------------------------------------- blocking, in threads

    def _connect(self) -> Any:
        import psycopg

        conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10)
        # Let the server notice a vanished client within seconds, and release its lock.
        conn.execute("SET tcp_keepalives_idle = 5")
        conn.execute("SET tcp_keepalives_interval = 2")
        conn.execute("SET tcp_keepalives_count = 3")
        # Another instance may create it at the same moment (IF NOT EXISTS is not atomic).
        with contextlib.suppress(psycopg.errors.UniqueViolation):
            conn.execute(
                "CREATE TABLE IF NOT EXISTS follower_leases (name text PRIMARY KEY, token bigint NOT NULL)"
            )
        return conn

    def _try_lock(self) -> int | None:
        with self._io:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            locked = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()[0]
            if not locked:
                return None
            # The new fencing token: from now on, commits with an older one fail.
            row = self._conn.execute(
                "INSERT INTO follower_leases (name, token) VALUES (%s, 1) ON CONFLICT (name) "
                "DO UPDATE SET token = follower_leases.token + 1 RETURNING token",
                (self.name,),
            ).fetchone()
            return int(row[0])

    def _still_held(self) -> bool:
        with self._io:
            if self._conn is None or self._conn.closed:
                return False
            row = self._conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND pid = pg_backend_pid() AND classid = %s::bigint::oid AND objid = %s::bigint::oid",
                ((self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF),
            ).fetchone()
            return bool(row and row[0])

    def _drop(self) -> None:
        with self._io:
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def postgres_conninfo(store: StoreSettings, service: str) -> str:
    """A libpq connection string for the service's database (values escaped by psycopg)."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo(
        host=store.postgres_host,
        port=str(store.postgres_port),
        user=store.postgres_user,
        password=store.postgres_password.get_secret_value(),
        dbname=store.postgres_database(service),
    )


def leadership_for(store: StoreSettings, service: str, follower: str) -> Leadership:
    """The leadership a follower needs on this kind of store (see the module docstring)."""
    if store.kind == "postgres":
        return AdvisoryLock(postgres_conninfo(store, service), f"{service}/{follower}")
    return Sole(follower)
