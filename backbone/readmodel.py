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

import functools
import operator
import time
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

from backbone import metrics
from backbone.eventstore import Lease, ServiceApplication
from backbone.follower import Follower, PositionMoved, Recorded
from backbone.logging import get_logger
from backbone.sqltypes import creating_tables, server_engine

log = get_logger(__name__)

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
        """Create the tables. Tables of another shape than the code's (a deployment added a
        table or a column) are dropped first, with the projections' positions: the
        projections then rebuild them from the log, as from an empty database."""
        stale = self._stale_tables()
        if stale:
            log.warning("read model tables changed: rebuilding them from the log", tables=stale)
            self.metadata.drop_all(self.engine)
        creating_tables(lambda: self.metadata.create_all(self.engine))  # several instances start

    def _stale_tables(self) -> list[str]:
        found = sa.inspect(self.engine)
        schema = (self.engine.get_execution_options().get("schema_translate_map") or {}).get(None)
        tables = self.metadata.sorted_tables
        existing = [t for t in tables if found.has_table(t.name, schema=schema)]
        if not existing:
            return []  # a new database
        missing = [t.name for t in tables if t not in existing]
        columns = {t.name: {c["name"] for c in found.get_columns(t.name, schema=schema)} for t in existing}
        return missing + [t.name for t in existing if not {c.name for c in t.columns} <= columns[t.name]]

    def drop(self) -> None:
        """Remove every table of the read model: the next projection run rebuilds it."""
        self.metadata.drop_all(self.engine)

    def position(self, name: str) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(
                sa.select(self.positions.c.position).where(self.positions.c.name == name)
            ).scalar()
        return value or 0

    def advance(
        self,
        conn: Connection,
        name: str,
        position: int,
        previous: int | None = None,
        lease: Lease | None = None,
    ) -> None:
        """Move a projection's position forward inside the caller's transaction.

        With `previous` (where the batch started), refuses unless the stored position is still
        exactly there: another instance of the projection, or an operator's rebuild that
        switched the tables (`ops rebuild`), moved it since. Without it, refuses only to move
        it backwards or to the same place. Either way the transaction then rolls back, and the
        projection resumes from the stored position (`PositionMoved`).

        With `lease` (a follower leading by lease, `backbone.leadership`), refuses unless that
        lease is still the current one: a stalled ex-leader writes nothing."""
        if lease is not None:
            token = conn.execute(
                sa.text("SELECT token FROM follower_leases WHERE name = :name FOR SHARE"), {"name": lease[0]}
            ).scalar()
            if token != lease[1]:
                raise PositionConflict(f"{name}: lease {lease[1]} is no longer current ({token})")
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
    if isinstance(conn, BatchWriter):
        conn.upsert(table, values, keys)
        return
    conn.execute(_upsert_statement(conn.dialect.name, table, tuple(values), tuple(keys)), values)


class BatchWriter:
    """A connection for projecting a whole batch: rows written with `upsert`, and then changed
    by `UPDATE ... WHERE <primary key> = <value>` statements, are put together in memory and
    written once, many rows per statement, when the batch ends (`flush`). Anything else (a
    query, another kind of statement, an update of a row not in memory) first writes what is
    in memory, then runs as it is: the tables always read as if every statement had run in
    order. A projection function needs nothing special: it gets this instead of a connection.
    """

    def __init__(self, conn: Connection):
        self.conn = conn
        self.dialect = conn.dialect
        # (table, key columns) -> key values -> the row as it will be written
        self._rows: dict[tuple[sa.Table, tuple[str, ...]], dict[tuple[Any, ...], dict[str, Any]]] = {}

    def upsert(self, table: sa.Table, values: dict[str, Any], keys: Sequence[str]) -> None:
        rows = self._rows.setdefault((table, tuple(keys)), {})
        key = tuple(values[k] for k in keys)
        row = rows.get(key)
        if row is None:
            rows[key] = dict(values)
        else:  # as the upsert would: the given columns take the new values
            row.update(values)

    def execute(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs and isinstance(statement, sa.Update) and self._update_in_memory(statement):
            return _Updated
        self.flush()
        return self.conn.execute(statement, *args, **kwargs)

    def flush(self) -> None:
        for (table, keys), rows in self._rows.items():
            shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for row in rows.values():
                shapes.setdefault(tuple(row), []).append(row)
            for columns, group in shapes.items():
                self.conn.execute(_upsert_statement(self.dialect.name, table, columns, keys), group)
        self._rows.clear()

    def __getattr__(self, name: str) -> Any:  # anything else a projection uses runs in order
        self.flush()
        return getattr(self.conn, name)

    def _update_in_memory(self, statement: sa.Update) -> bool:
        table = statement.table
        primary_key = list(table.primary_key.columns) if isinstance(table, sa.Table) else []
        where = statement._where_criteria
        if len(primary_key) != 1 or len(where) != 1:
            return False
        [criterion], [column] = where, primary_key
        if not (
            isinstance(criterion, sa.BinaryExpression)
            and criterion.operator is operator.eq
            and criterion.left is column
            and isinstance(criterion.right, sa.BindParameter)
        ):
            return False
        values = statement._values or {}
        if not all(isinstance(k, str) and isinstance(v, sa.BindParameter) for k, v in values.items()):
            return False
        row = self._rows.get((table, (column.name,)), {}).get((criterion.right.value,))
        if row is None:
            return False
        row.update({k: v.value for k, v in values.items()})
        return True


class _UpdatedOneRow:
    rowcount = 1


_Updated = _UpdatedOneRow()


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

    def report_lag(self, lag: int) -> None:
        super().report_lag(lag)
        metrics.projection_lag.labels(self.name).set(lag)

    async def handle(self, batch: Sequence[Recorded]) -> None:
        await self.blocking(self._apply_and_announce, batch, self.position, self.leadership.lease)
        self._moved_to(batch[-1].position)  # before the lag metric's query
        head = await self.blocking(self.app.head)
        metrics.projection_lag.labels(self.name).set(head - batch[-1].position)

    def apply(
        self, batch: Sequence[Recorded], previous: int | None = None, lease: Lease | None = None
    ) -> None:
        """Project a batch. The running follower passes `previous`, where it believes the
        batch starts, and its lease (see `ReadModel.advance`); a one-off caller need not."""
        with self.read_model.engine.begin() as conn:
            writer = BatchWriter(conn)
            for recorded in batch:
                self.project(writer, recorded)  # type: ignore[arg-type]
            writer.flush()
            self.read_model.advance(conn, self.name, batch[-1].position, previous=previous, lease=lease)
        if self.erases is not None and any(self.erases(r.event) for r in batch):
            self._purge_due = True
        if self._purge_due:
            self._purge_due = not self.read_model.purge()

    def _apply_and_announce(self, batch: Sequence[Recorded], previous: int, lease: Lease | None) -> None:
        self.apply(batch, previous, lease)
        self._announce(batch[-1].position)  # a request waiting to show its change looks now

    async def idle(self) -> None:
        if self._purge_due:  # readers kept the log busy last time: try again
            self._purge_due = not await self.blocking(self.read_model.purge)


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
