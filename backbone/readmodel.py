"""Read models: a service's derived state, rebuilt at will from its own event log.

Queries ("my bookings", "accounts of this tenant", "emails due for sending") need tables, which
an event store does not give. Each service declares its tables (SQLAlchemy Core, so the same
code runs on SQLite and PostgreSQL) and a `project` function; a `Projection` follows the
notification log and applies each event to the tables, writing its position in the same
transaction, so a crash never applies an event twice or skips one.

Nothing in a read model is a source of truth: drop its tables (or its SQLite file) and the
projection rebuilds it from position 0 with the same answers.

Read models hold derived personal data in the clear (to search and list it). When a subject is
erased its rows are scrubbed, and `purge()` then makes the old contents unrecoverable from the
files: SQLite runs with `secure_delete` (freed space is overwritten with zeros) and its
write-ahead log is checkpointed and truncated; PostgreSQL tables are vacuumed. A `Projection`
given `erases=` purges after every batch that contained such an event.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

from backbone import metrics
from backbone.eventstore import ServiceApplication
from backbone.follower import Follower, PositionMoved, Recorded
from backbone.sqltypes import server_engine

Project = Callable[[Connection, Recorded], None]


def positions_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "projection_positions",
        metadata,
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
    )


class ReadModel:
    """The tables of one service's read models, in their own database (or SQLite file)."""

    def __init__(self, url: str, metadata: sa.MetaData):
        self.url = url
        self.metadata = metadata
        existing = metadata.tables.get("projection_positions")  # a second ReadModel on it
        self.positions = existing if existing is not None else positions_table(metadata)
        self.engine = _engine(url)

    def create(self) -> None:
        self.metadata.create_all(self.engine)

    def drop(self) -> None:
        """Remove every table of the read model: the next projection run rebuilds it."""
        self.metadata.drop_all(self.engine)

    def position(self, name: str) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(
                sa.select(self.positions.c.position).where(self.positions.c.name == name)
            ).scalar()
        return value or 0

    def advance(self, conn: Connection, name: str, position: int, previous: int | None = None) -> None:
        """Move a projection's position forward inside the caller's transaction.

        With `previous` (where the batch started), refuses unless the stored position is still
        exactly there: another instance of the projection, or an operator's rebuild that
        switched the tables (`ops rebuild`), moved it since. Without it, refuses only to move
        it backwards or to the same place. Either way the transaction then rolls back, and the
        projection resumes from the stored position (`PositionMoved`)."""
        where = (
            self.positions.c.position == previous
            if previous is not None
            else self.positions.c.position < position
        )
        updated = conn.execute(
            sa.update(self.positions).where(self.positions.c.name == name, where).values(position=position)
        ).rowcount
        if updated:
            return
        exists = conn.execute(
            sa.select(self.positions.c.position).where(self.positions.c.name == name)
        ).scalar()
        if previous is None and exists is not None:
            raise PositionConflict(f"{name} is already at {exists}, not below {position}")
        if previous is not None and (exists or 0) != previous:
            raise PositionConflict(f"{name} is at {exists or 0}, not at {previous} where this batch started")
        conn.execute(sa.insert(self.positions).values(name=name, position=position))

    def purge(self, attempts: int = 20) -> bool:
        """Make rows deleted or overwritten so far unrecoverable from the database files (see
        the module docstring). Returns False if readers kept the SQLite log busy throughout."""
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                for table in self.metadata.sorted_tables:
                    conn.execute(sa.text(f'VACUUM "{table.name}"'))
            return True
        if self.engine.dialect.name != "sqlite" or ":memory:" in self.url:
            return True
        for _ in range(attempts):
            with self.engine.connect() as conn:
                busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").first()
            if busy is None or not busy[0]:
                return True
            time.sleep(0.05)  # a reader holds an older snapshot: let it finish
        return False

    def ping(self) -> None:
        """A trivial query: raises if the read model's database does not answer."""
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def close(self) -> None:
        self.engine.dispose()


class PositionConflict(PositionMoved):
    """The stored position of a projection is not where this batch started."""


def upsert(conn: Connection, table: sa.Table, values: dict[str, Any], keys: Sequence[str]) -> None:
    """Insert a row, or update it where the key columns match (portable SQLite/PostgreSQL)."""
    conn.execute(_upsert_statement(conn.dialect.name, table, tuple(values), tuple(keys)), values)


@functools.lru_cache(maxsize=256)
def _upsert_statement(
    dialect_name: str, table: sa.Table, columns: tuple[str, ...], keys: tuple[str, ...]
) -> Any:
    # Built once per shape and reused with new values: building it is most of an upsert's cost
    # (rebuilds and replays run millions of them).
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    statement = dialect.insert(table)
    update = {k: statement.excluded[k] for k in columns if k not in keys}
    if update:
        return statement.on_conflict_do_update(index_elements=list(keys), set_=update)
    return statement.on_conflict_do_nothing(index_elements=list(keys))


class Projection(Follower):
    """Follows the event log and keeps one read model up to date.

    `erases(event)` says which events scrub personal data from the tables: after a batch with
    one of them, the read model is purged (see `ReadModel.purge`)."""

    def __init__(
        self,
        app: ServiceApplication,
        read_model: ReadModel,
        name: str,
        project: Project,
        batch_size: int = 500,
        erases: Callable[[Any], bool] | None = None,
    ):
        super().__init__(app, batch_size)
        self.name = name
        self.read_model = read_model
        self.project = project
        self.erases = erases
        self._purge_due = False

    def load_position(self) -> int:
        return self.read_model.position(self.name)

    async def handle(self, batch: Sequence[Recorded]) -> None:
        await asyncio.to_thread(self.apply, batch, self.position)
        head = await asyncio.to_thread(self.app.recorder.max_notification_id) or 0
        metrics.projection_lag.labels(self.name).set(head - batch[-1].position)

    def apply(self, batch: Sequence[Recorded], previous: int | None = None) -> None:
        """Project a batch. The running follower passes `previous`, where it believes the
        batch starts (see `ReadModel.advance`); a one-off caller need not."""
        with self.read_model.engine.begin() as conn:
            for recorded in batch:
                self.project(conn, recorded)
            self.read_model.advance(conn, self.name, batch[-1].position, previous=previous)
        if self.erases is not None and any(self.erases(r.event) for r in batch):
            self._purge_due = True
        if self._purge_due:
            self._purge_due = not self.read_model.purge()

    async def idle(self) -> None:
        if self._purge_due:  # readers kept the log busy last time: try again
            self._purge_due = not await asyncio.to_thread(self.read_model.purge)


def _engine(url: str) -> Engine:
    if url.startswith("sqlite") and ":memory:" in url:
        return sa.create_engine(url, connect_args={"check_same_thread": False}, poolclass=StaticPool)
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")  # derived state: rebuildable
            cursor.execute("PRAGMA secure_delete=ON")  # scrubbed personal data: zeroed, not freed
            cursor.close()

        return engine
    return server_engine(url, pool_size=5, max_overflow=5)
