"""Read models: a service's derived state, rebuilt at will from its own event log.

Queries ("my bookings", "accounts of this tenant", "emails due for sending") need tables, which
an event store does not give. Each service declares its tables (SQLAlchemy Core, so the same
code runs on SQLite and PostgreSQL) and a `project` function; a `Projection` follows the
notification log and applies each event to the tables, writing its position in the same
transaction, so a crash never applies an event twice or skips one.

A batch of events is applied in one transaction through a `BatchWriter`: the projection
functions write with `upsert`, `update`, `insert`, `delete` (and read with `value`), which it
keeps in memory, the latest row per key, and writes once at the end, many rows per statement.
A live batch and a rebuild's page of thousands of events go through the same code.

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
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

from backbone import metrics
from backbone.eventstore import Lease, ServiceApplication
from backbone.follower import Follower, PositionMoved, Recorded
from backbone.logging import get_logger
from backbone.sqltypes import creating_tables, json_text, server_engine

log = get_logger(__name__)

Project = Callable[[Connection, Recorded], None]


def positions_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "projection_positions",
        metadata,
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
    )


REBUILD_PAGE_CACHE_MIB = 64
"""SQLite's page cache per connection, by default: a rebuild writes rows keyed by hashes
(search tokens) all over the tables' B-trees, and with a small cache it slows down as the
tables outgrow it."""
SERVING_PAGE_CACHE_MIB = 8
"""A running service's page cache per connection (`ReadModel(..., page_cache_mib=)`). In WAL
mode a connection drops its whole cache when it begins a transaction after another one
committed, and the projection commits every few hundred milliseconds: a serving
connection's cache lives for a request or a batch, not longer. At 64 MiB each the pooled
connections took turns filling theirs (bookings' SQLite held 90-100 MB, 234 MB at its
peak) and left glibc's heap that large (see "Memory over a soak" in docs/performance.md)."""


AFTER_REBUILD = "made_after_rebuild"
"""`sa.Index(..., info={AFTER_REBUILD: True})`: an index no projection reads through (it serves
queries only). A rebuild's shadow is filled without it, and makes it once it has caught up, from
the whole table in one sort (`ops.rebuild`), rather than putting an entry in for every row as
it comes: keyed by hashes or UUIDs, those entries land all over the index's B-tree, and the
rebuild's CPU per event grew with the log once the index outgrew the page cache."""


SET_BASED_ROWS = 100
"""From how many rows of one shape a `BatchWriter` on PostgreSQL upserts or updates them in one
statement (`BatchWriter._set_based`) rather than one per row."""


class ReadModel:
    """The tables of one service's read models, in their own database (or SQLite file)."""

    def __init__(self, url: str, metadata: sa.MetaData, page_cache_mib: int = REBUILD_PAGE_CACHE_MIB):
        self.url = url
        self.metadata = metadata
        existing = metadata.tables.get("projection_positions")  # a second ReadModel on it
        self.positions = existing if existing is not None else positions_table(metadata)
        self.engine = _engine(url, page_cache_mib)

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


def update(conn: Connection, table: sa.Table, key: dict[str, Any], values: dict[str, Any]) -> None:
    """`UPDATE table SET <values> WHERE <key columns> = <key values>`."""
    if isinstance(conn, BatchWriter):
        conn.update(table, key, values)
        return
    conn.execute(_update_statement(table, tuple(key), tuple(values)), _update_params(key, values))


def delete(conn: Connection, table: sa.Table, where: dict[str, Any]) -> None:
    """`DELETE FROM table WHERE <columns> = <values>`."""
    if isinstance(conn, BatchWriter):
        conn.delete(table, where)
        return
    conn.execute(_delete_statement(table, tuple(where)), _key_params(where))


def insert(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """`INSERT INTO table` these rows (a row already there is an integrity error)."""
    if isinstance(conn, BatchWriter):
        conn.insert(table, rows)
        return
    for columns, group in _by_shape(rows).items():
        conn.execute(_insert_statement(table, columns), group)


def replace(
    conn: Connection,
    table: sa.Table,
    owner: dict[str, Any],
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    *,
    new: bool = False,
) -> None:
    """Make the rows of `table` whose `owner` columns have these values exactly `rows` (values
    of `columns`, in that order; the owner's columns are added to each): `DELETE ... WHERE
    <owner>`, then `INSERT` them. `new`: the owner has no rows yet (e.g. a booking just placed),
    so there is nothing to delete.

    For many small rows per owner (search tokens): a `BatchWriter` keeps them as plain tuples
    by owner, with none of the per-row bookkeeping of `insert`, and writes them in one
    statement per table at the flush."""
    if isinstance(conn, BatchWriter):
        conn.replace(table, owner, tuple(columns), rows, new=new)
        return
    if not new:
        conn.execute(_delete_statement(table, tuple(owner)), _key_params(owner))
    if rows:
        names = (*owner, *columns)
        values = tuple(owner.values())
        conn.execute(
            _insert_statement(table, names), [dict(zip(names, values + r, strict=True)) for r in rows]
        )


def value(conn: Connection, table: sa.Table, column: str, key: dict[str, Any]) -> Any:
    """`SELECT <column> FROM table WHERE <key columns> = <key values>`: the value, or None when
    there is no such row."""
    if isinstance(conn, BatchWriter):
        return conn.value(table, column, key)
    return conn.execute(_select_statement(table, column, tuple(key)), _key_params(key)).scalar()


def prefetch(conn: Connection, table: sa.Table, columns: Sequence[str], keys: Iterable[Any]) -> None:
    """Read `columns` of the rows of `table` whose (one-column) primary key is in `keys`, in one
    query, for `value` to answer from while a batch is in memory (`BatchWriter.prefetch`: what a
    batch's events will read, asked for before they are projected); on a plain connection,
    nothing (`value` reads as it goes)."""
    if isinstance(conn, BatchWriter):
        conn.prefetch(table, columns, keys)


class BatchWriter:
    """A connection for projecting a whole batch: what a projection writes with `upsert`,
    `update`, `insert` and `delete` (and `UPDATE ... WHERE <primary key> = <value>` statements)
    is put together in memory, the latest row per key, and written once, many rows per
    statement, when the batch ends (`flush`). `value` answers from memory when the row is there.

    The tables always read as if every statement had run in order: each table's deletes run
    first at the flush, then its rows; a write or read that the memory cannot keep in that
    order (say, an update of a row the memory holds only in part, then a delete) first writes
    what is in memory, as does anything else (a query, another kind of statement), which then
    runs as it is. Tables are independent (read models have no foreign keys). A projection
    function needs nothing special: it gets this instead of a connection.
    """

    def __init__(self, conn: Connection, staging: Staging | None = None):
        self.conn = conn
        self.dialect = conn.dialect
        self.staging = staging
        self._tables: dict[sa.Table, _Pending] = {}
        self._owned: dict[sa.Table, _Owned] = {}  # see `replace`
        # Rows read ahead (`prefetch`) by table and key: their columns as the table held them
        # when read; forgotten at every flush (the table then holds what the memory did).
        self._read: dict[sa.Table, dict[Any, dict[str, Any]]] = {}

    def _pending(self, table: sa.Table) -> _Pending:
        if self._owned and table in self._owned:  # another kind of write to those rows' table
            self.flush()
        if self.staging is not None and table in self.staging.tables:
            raise RuntimeError(
                f"{table.name} is written by `replace` during a rebuild (staged): write it only so"
            )
        pending = self._tables.get(table)
        if pending is None:
            pending = self._tables[table] = _Pending(table)
        return pending

    def replace(
        self,
        table: sa.Table,
        owner: dict[str, Any],
        columns: tuple[str, ...],
        rows: Sequence[tuple[Any, ...]],
        *,
        new: bool = False,
    ) -> None:
        owned = self._owned.get(table)
        if owned is None or owned.owner != tuple(owner) or owned.columns != columns:
            if owned is not None or table in self._tables:
                self.flush()  # writes of another shape to the table: in order
            owned = self._owned[table] = _Owned(tuple(owner), columns)
        key = tuple(owner.values())
        before = owned.rows.get(key)
        # Replaced again in this batch: the rows written before it are still to be deleted if
        # they were the first time (the rows replaced since were only in memory).
        delete = before[0] if before is not None else not new
        owned.rows[key] = (delete, rows)

    def upsert(self, table: sa.Table, values: dict[str, Any], keys: Sequence[str]) -> None:
        pending = self._pending(table)
        keys = tuple(keys)
        if keys != pending.primary_key:  # rows in memory are known by their primary key only
            self.flush()
            self.conn.execute(_upsert_statement(self.dialect.name, table, tuple(values), keys), values)
            return
        found = (keys, _key_of(keys)(values))
        row = pending.find(found)
        if row is not None and row.kind == _UPDATE and not row.values.keys() <= values.keys():
            self.flush()  # an update of some columns, then an upsert of others: keep the order
            pending, row = self._pending(table), None
        if row is None or row.kind == _UPDATE:  # the upsert overwrites whatever the update set
            pending.rows[found] = _Row(_UPSERT, keys, dict(values))
        else:  # as the upsert would: the given columns take the new values
            pending.change(row, values)

    def insert(self, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
        pending = self._pending(table)
        keys, key_of = pending.primary_key, _key_of(pending.primary_key)
        for values in rows:
            found = (keys, key_of(values))
            if pending.find(found) is not None:  # fails as it would have, at the flush
                self.flush()
                pending = self._pending(table)
            pending.add_insert(found, _Row(_INSERT, keys, dict(values)))

    def update(self, table: sa.Table, key: dict[str, Any], values: dict[str, Any]) -> None:
        pending = self._pending(table)
        keys = tuple(key)
        if keys != pending.primary_key:
            self.flush()
            self.conn.execute(_update_statement(table, keys, tuple(values)), _update_params(key, values))
            return
        found = (keys, _key_of(keys)(key))
        row = pending.find(found)
        if row is None:  # not in memory: an update of what the table holds
            pending.rows[found] = _Row(_UPDATE, keys, {**key, **values})
        else:
            pending.change(row, values)

    def delete(self, table: sa.Table, where: dict[str, Any]) -> None:
        pending = self._pending(table)
        columns = tuple(where)
        # Deletes run first at the flush: fine for rows inserted here (they were not there
        # before) and for whole rows written by key that do not match (they end the same).
        # Anything else in memory is written first.
        whole = pending.columns
        for row in pending.rows.values():  # the upserted and updated rows
            if (
                row.kind != _UPSERT
                or row.values.keys() != whole
                or all(row.values[c] == where[c] for c in columns)
            ):
                self.flush()
                pending = self._pending(table)
                break
        if not pending.drop_inserted(columns, _key_of(columns)(where)):
            self.flush()
            pending = self._pending(table)
        pending.deletes.setdefault(columns, []).append(_key_params(where))

    def prefetch(self, table: sa.Table, columns: Sequence[str], keys: Iterable[Any]) -> None:
        """See the module's `prefetch`. Keys already read, or whose rows are in memory, are
        not read again; a table keyed by several columns is not read ahead."""
        pending = self._pending(table)
        if len(pending.primary_key) != 1:
            return
        [name] = pending.primary_key
        read = self._read.setdefault(table, {})
        wanted = list({k for k in keys if k not in read and pending.find(((name,), k)) is None})
        columns = tuple(dict.fromkeys((name, *columns)))
        for first in range(0, len(wanted), 500):
            chunk = wanted[first : first + 500]
            query = sa.select(*[table.c[c] for c in columns]).where(table.c[name].in_(chunk))
            for found in self.conn.execute(query).mappings():
                read[found[name]] = dict(found)
            for missing in set(chunk) - read.keys():
                read[missing] = {}  # no such row (yet): `value` asks the table again

    def value(self, table: sa.Table, column: str, key: dict[str, Any]) -> Any:
        pending = self._pending(table)
        keys = tuple(key)
        row = pending.find((keys, _key_of(keys)(key))) if keys == pending.primary_key else None
        if row is not None and row.kind != _UPDATE and column in row.values:
            return row.values[column]
        untouched = keys == pending.primary_key and not pending.deletes and table not in self._owned
        if untouched and self._read:
            # Read ahead, and the row is in the table: as read, unless an update in memory set
            # the column since (the update then applies to it).
            ahead = self._read.get(table, {}).get(_key_of(keys)(key))
            if ahead and column in ahead:
                if row is None:
                    return ahead[column]
                if column in row.values:
                    return row.values[column]
        if row is not None or not untouched:
            self.flush()  # what the memory holds may change the answer: written first
        # else nothing in memory touches this row (the memory holds rows by their whole key):
        # the table's answer is the answer, and the batch stays in memory (a payment's projection
        # reads the amount paid so far, once per payment)
        return self.conn.execute(_select_statement(table, column, keys), _key_params(key)).scalar()

    def execute(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs and isinstance(statement, sa.Update) and self._update_in_memory(statement):
            return _Updated
        self.flush()
        return self.conn.execute(statement, *args, **kwargs)

    def flush(self) -> None:
        self._read.clear()
        for table, owned in self._owned.items():
            self._flush_owned(table, owned)
        self._owned.clear()
        for table, pending in self._tables.items():
            for columns, params in pending.deletes.items():
                self._many(_delete_statement(table, columns), tuple(params[0]), params)
            shapes: dict[tuple[str, tuple[str, ...], tuple[str, ...]], list[dict[str, Any]]] = {}
            for row in (*pending.inserts.values(), *pending.rows.values()):
                shapes.setdefault((row.kind, row.keys, tuple(row.values)), []).append(row.values)
            for (kind, keys, columns), group in shapes.items():
                if kind != _INSERT and self._set_based(table, kind, keys, columns, group):
                    continue
                if kind == _UPSERT:
                    self._many(_upsert_statement(self.dialect.name, table, columns, keys), columns, group)
                elif kind == _INSERT:
                    self._many(_insert_statement(table, columns), columns, group)
                else:
                    changed = tuple(c for c in columns if c not in keys)
                    params = [_update_params({k: r[k] for k in keys}, r) for r in group]
                    self._many(_update_statement(table, keys, changed), tuple(params[0]), params)
        self._tables.clear()

    def _set_based(
        self,
        table: sa.Table,
        kind: str,
        keys: tuple[str, ...],
        columns: tuple[str, ...],
        rows: list[dict[str, Any]],
    ) -> bool:
        """PostgreSQL, many rows upserted or updated: `COPY` them into a temporary table, then
        one `INSERT ... SELECT ... ON CONFLICT DO UPDATE` (or `UPDATE ... FROM`) for all of
        them. psycopg's `executemany` sends them in one pipeline, but the server still runs one
        statement per row: half of a rebuild's wall clock waited for it. The values go through
        the column types' conversions as SQLAlchemy's would (JSON as its text, ...), and the
        keys are distinct (the latest row per key), as the statement run row by row needs.
        False (nothing done) on other databases or for a few rows."""
        changed = [c for c in columns if c not in keys]
        if (
            self.dialect.name != "postgresql"
            or len(rows) < SET_BASED_ROWS
            or not (changed or kind == _UPSERT)
        ):
            return False
        quote = self.dialect.identifier_preparer.quote
        translate = self.conn.get_execution_options().get("schema_translate_map") or {}
        schema = translate.get(table.schema, table.schema)
        target = f"{quote(schema)}.{quote(table.name)}" if schema else quote(table.name)
        batch = f"pg_temp.{quote('batch_' + table.name)}"
        names = ", ".join(quote(c) for c in columns)
        convert = [table.c[c].type.dialect_impl(self.dialect).bind_processor(self.dialect) for c in columns]
        self.conn.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {batch} AS SELECT {names} FROM {target} WITH NO DATA"  # noqa: S608
        )
        cursor = self.conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY {batch} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(
                    [f(row[c]) if f is not None else row[c] for c, f in zip(columns, convert, strict=True)]
                )
        if kind == _UPSERT:
            action = (
                "DO UPDATE SET " + ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in changed)
                if changed
                else "DO NOTHING"
            )
            on = ", ".join(quote(k) for k in keys)
            # Identifiers only, quoted by the dialect, from the table's definition: no values.
            sql = f"INSERT INTO {target} ({names}) SELECT {names} FROM {batch} ON CONFLICT ({on}) {action}"  # noqa: S608
        else:
            assigned = ", ".join(f"{quote(c)} = b.{quote(c)}" for c in changed)
            match = " AND ".join(f"t.{quote(k)} = b.{quote(k)}" for k in keys)
            sql = f"UPDATE {target} AS t SET {assigned} FROM {batch} AS b WHERE {match}"  # noqa: S608
        self.conn.exec_driver_sql(sql)
        self.conn.exec_driver_sql(f"DROP TABLE {batch}")
        return True

    def _many(self, statement: Any, names: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
        """Run `statement` once per row. On SQLite straight through the driver (SQLAlchemy's
        per-row work costs more than SQLite's own on a rebuild's hundreds of thousands of
        rows), with the statement as SQLAlchemy compiles it and its type conversions; on
        PostgreSQL through SQLAlchemy, which puts many rows in one INSERT."""
        if self.dialect.name != "sqlite" or len(rows) < 2:
            self.conn.execute(statement, rows)
            return
        translate = self.conn.get_execution_options().get("schema_translate_map")
        sql, order, convert = _compiled(statement, self.dialect, names, tuple((translate or {}).items()))
        params = [
            tuple(f(row[n]) if f is not None else row[n] for n, f in zip(order, convert, strict=True))
            for row in rows
        ]
        self.conn.exec_driver_sql(sql, params)

    def _flush_owned(self, table: sa.Table, owned: _Owned) -> None:
        if self.staging is not None:
            self.staging.write(self, table, owned.owner, owned.columns, owned.rows)
            return
        deletes = [key for key, (delete, _) in owned.rows.items() if delete]
        if deletes:
            self._tuples(
                _delete_statement(table, owned.owner), tuple(f"key_{c}" for c in owned.owner), deletes
            )
        rows = [key + row for key, (_, found) in owned.rows.items() for row in found]
        if not rows:
            return
        self.insert_tuples(table, owned.owner + owned.columns, rows)

    def insert_tuples(self, table: sa.Table, names: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        """Insert rows given as tuples of the values of `names`, now (`COPY` on PostgreSQL)."""
        if self.dialect.name == "postgresql" and not any(_processors(table, names)):
            self._copy(table, names, rows)
        else:
            self._tuples(_insert_statement(table, names), names, rows)

    def _copy(self, table: sa.Table, names: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        """PostgreSQL: the rows through `COPY ... FROM STDIN` (no statement per row, nor any
        SQL built from their values), into the table's schema as this connection maps it."""
        translate = self.conn.get_execution_options().get("schema_translate_map") or {}
        schema = translate.get(table.schema, table.schema)
        quote = self.dialect.identifier_preparer.quote
        target = f"{quote(schema)}.{quote(table.name)}" if schema else quote(table.name)
        cursor = self.conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY {target} ({', '.join(quote(n) for n in names)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def _tuples(self, statement: Any, names: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        """`_many` with each row's values as a tuple in the order of `names`."""
        if self.dialect.name != "sqlite":
            self.conn.execute(statement, [dict(zip(names, row, strict=True)) for row in rows])
            return
        translate = self.conn.get_execution_options().get("schema_translate_map")
        sql, order, convert = _compiled(statement, self.dialect, names, tuple((translate or {}).items()))
        at = [names.index(n) for n in order]
        if any(convert):
            rows = [
                tuple(f(row[i]) if f is not None else row[i] for i, f in zip(at, convert, strict=True))
                for row in rows
            ]
        elif order != names:
            rows = (
                list(map(operator.itemgetter(*at), rows)) if len(at) > 1 else [(row[at[0]],) for row in rows]
            )
        self.conn.exec_driver_sql(sql, rows)

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
        pending = self._pending(table)
        row = pending.find(((column.name,), criterion.right.value))
        if row is None:
            return False
        pending.change(row, {k: v.value for k, v in values.items()})
        return True


_UPSERT, _INSERT, _UPDATE = "upsert", "insert", "update"

_Key = tuple[tuple[str, ...], Any]  # (key columns, key values as `_key_of` gives them)


@functools.lru_cache(maxsize=256)
def _key_of(keys: tuple[str, ...]) -> Callable[[dict[str, Any]], Any]:
    """The key of a row: its value (one key column) or tuple of values (several)."""
    return operator.itemgetter(*keys)


class _Row:
    """A row as the flush will write it: upserted, inserted, or updated (some columns)."""

    __slots__ = ("keys", "kind", "values")

    def __init__(self, kind: str, keys: tuple[str, ...], values: dict[str, Any]):
        self.kind, self.keys, self.values = kind, keys, values


class Staging(Protocol):
    """Where a rebuild's `BatchWriter` puts the rows written by `replace` instead of their
    table (see `ops.rebuild`): `tables` are those it holds rows of."""

    tables: set[sa.Table]

    def write(
        self,
        writer: BatchWriter,
        table: sa.Table,
        owner: tuple[str, ...],
        columns: tuple[str, ...],
        rows: dict[tuple[Any, ...], tuple[bool, Sequence[tuple[Any, ...]]]],
    ) -> None: ...


class _Owned:
    """What a `BatchWriter` holds for a table written by `replace`: the rows of each owner
    (by the values of the owner's columns) and whether its old rows are to be deleted."""

    __slots__ = ("columns", "owner", "rows")

    def __init__(self, owner: tuple[str, ...], columns: tuple[str, ...]):
        self.owner, self.columns = owner, columns
        self.rows: dict[tuple[Any, ...], tuple[bool, Sequence[tuple[Any, ...]]]] = {}


class _Pending:
    """What a `BatchWriter` holds for one table: rows inserted (`inserts`), rows upserted or
    updated (`rows`), and the deletes to run first."""

    def __init__(self, table: sa.Table):
        self.primary_key = tuple(c.name for c in table.primary_key.columns)
        self.columns = set(table.columns.keys())
        self.deletes: dict[tuple[str, ...], list[dict[str, Any]]] = {}  # columns -> their values
        self.inserts: dict[_Key, _Row] = {}
        self.rows: dict[_Key, _Row] = {}
        # Inserted rows by the value of a column they are deleted by (made at the first such
        # delete), so that a delete is not a scan of every row in memory.
        self._by: dict[tuple[str, ...], tuple[Callable[[dict[str, Any]], Any], dict[Any, list[_Key]]]] = {}

    def find(self, key: _Key) -> _Row | None:
        return self.inserts.get(key) or self.rows.get(key)

    def add_insert(self, key: _Key, row: _Row) -> None:
        self.inserts[key] = row
        for columns, (key_of, index) in self._by.items():
            try:
                value = key_of(row.values)
            except KeyError:  # cannot be indexed by them: made again (and refused) at the next delete
                del self._by[columns]
                break
            found = index.get(value)
            if found is None:
                index[value] = [key]
            else:
                found.append(key)

    def change(self, row: _Row, values: dict[str, Any]) -> None:
        if row.kind == _INSERT:
            for columns in [c for c in self._by if not values.keys().isdisjoint(c)]:
                del self._by[columns]  # made again at the next delete by them
        row.values.update(values)

    def drop_inserted(self, columns: tuple[str, ...], value: Any) -> bool:
        """Forget the rows inserted here whose `columns` are `value` (as `_key_of` gives it);
        False (and nothing forgotten) if some inserted row does not give all of `columns`."""
        key_of = _key_of(columns)
        made = self._by.get(columns)
        if made is None:
            if not all(r.values.keys() >= set(columns) for r in self.inserts.values()):
                return False
            index: dict[Any, list[_Key]] = {}
            for key, row in self.inserts.items():
                index.setdefault(key_of(row.values), []).append(key)
            self._by[columns] = (key_of, index)
        else:
            index = made[1]
        for key in index.pop(value, ()):
            row = self.inserts.get(key)
            if row is not None and key_of(row.values) == value:
                del self.inserts[key]
        return True


def _by_shape(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        shapes.setdefault(tuple(row), []).append(row)
    return shapes


def _key_params(key: dict[str, Any]) -> dict[str, Any]:
    return {f"key_{k}": v for k, v in key.items()}


def _update_params(key: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in values.items() if k not in key}, **_key_params(key)}


# Statements built once per shape and reused with new values: building one is most of the cost
# of running it (rebuilds and replays run millions of them).


@functools.lru_cache(maxsize=256)
def _compiled(
    statement: Any, dialect: Any, names: tuple[str, ...], translate: tuple[tuple[Any, Any], ...]
) -> tuple[str, tuple[str, ...], tuple[Callable[[Any], Any] | None, ...]]:
    """A statement's SQL for a positional driver (SQLite's), the order of its parameters and
    the conversion of each (the column types' bind processors, as SQLAlchemy applies them)."""
    compiled = statement.compile(
        dialect=dialect,
        column_keys=list(names),
        schema_translate_map=dict(translate) or None,
        render_schema_translate=bool(translate),
    )
    assert compiled.positional, dialect.paramstyle
    order = tuple(compiled.positiontup or ())
    processors = compiled._bind_processors
    return compiled.string, order, tuple(processors.get(n) for n in order)


@functools.lru_cache(maxsize=256)
def _processors(table: sa.Table, names: tuple[str, ...]) -> tuple[Any, ...]:
    """The columns' conversions of a value before it is sent (None: sent as it is)."""
    from sqlalchemy.dialects.postgresql import psycopg

    dialect = psycopg.dialect()
    return tuple(table.c[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names)


@functools.lru_cache(maxsize=256)
def _update_statement(table: sa.Table, keys: tuple[str, ...], columns: tuple[str, ...]) -> Any:
    # The SET clause: the columns of the parameters given (`columns`, for the cache's key).
    return sa.update(table).where(*[table.c[k] == sa.bindparam(f"key_{k}") for k in keys])


@functools.lru_cache(maxsize=256)
def _delete_statement(table: sa.Table, columns: tuple[str, ...]) -> Any:
    return sa.delete(table).where(*[table.c[c] == sa.bindparam(f"key_{c}") for c in columns])


@functools.lru_cache(maxsize=256)
def _insert_statement(table: sa.Table, columns: tuple[str, ...]) -> Any:
    return sa.insert(table)  # the columns of the parameters given


@functools.lru_cache(maxsize=256)
def _select_statement(table: sa.Table, column: str, keys: tuple[str, ...]) -> Any:
    return sa.select(table.c[column]).where(*[table.c[k] == sa.bindparam(f"key_{k}") for k in keys])


class _UpdatedOneRow:
    rowcount = 1


_Updated = _UpdatedOneRow()


@functools.lru_cache(maxsize=256)
def _upsert_statement(
    dialect_name: str, table: sa.Table, columns: tuple[str, ...], keys: tuple[str, ...]
) -> Any:
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

    handles_in_thread = True  # read, applied and announced in its thread (`Follower._drain`)

    async def handle(self, batch: Sequence[Recorded]) -> None:
        # The loop's way to the same work (`_follow` takes `handle_in_thread` in the thread).
        await self.blocking(self.handle_in_thread, batch)
        self._stepped()

    def handle_in_thread(self, batch: Sequence[Recorded]) -> None:
        self._apply_and_announce(batch, self.position, self.leadership.lease)
        metrics.projection_lag.labels(self.name).set(self.app.head() - batch[-1].position)

    def apply(
        self, batch: Sequence[Recorded], previous: int | None = None, lease: Lease | None = None
    ) -> None:
        """Project a batch. The running follower passes `previous`, where it believes the
        batch starts, and its lease (see `ReadModel.advance`); a one-off caller need not."""
        with self.read_model.engine.begin() as conn:
            # The position first: a batch that another writer applied meanwhile (a rebuild's
            # switch, another instance) is refused before any of its rows is written, not by
            # the first row it cannot write twice (a booking's search tokens are inserted).
            self.read_model.advance(conn, self.name, batch[-1].position, previous=previous, lease=lease)
            writer = BatchWriter(conn)
            self.read_ahead(writer, batch)
            for recorded in batch:
                self.project(writer, recorded)  # type: ignore[arg-type]
            writer.flush()
        if self.erases is not None and any(self.erases(r.event) for r in batch):
            self._purge_due = True
        if self._purge_due:
            self._purge_due = not self.read_model.purge()

    def read_ahead(self, writer: BatchWriter, batch: Sequence[Recorded]) -> None:
        """What the batch's events will read, in one query per table, if the projection
        function says how (its `read_ahead(writer, batch)` attribute, with `prefetch`)."""
        ahead = getattr(self.project, "read_ahead", None)
        if ahead is not None:
            ahead(writer, batch)

    def _apply_and_announce(self, batch: Sequence[Recorded], previous: int, lease: Lease | None) -> None:
        self.apply(batch, previous, lease)
        self._announce(batch[-1].position)  # a request waiting to show its change looks now

    async def idle(self) -> None:
        if self._purge_due:  # readers kept the log busy last time: try again
            self._purge_due = not await self.blocking(self.read_model.purge)


def _engine(url: str, page_cache_mib: int = REBUILD_PAGE_CACHE_MIB) -> Engine:
    if url.startswith("sqlite") and ":memory:" in url:
        return sa.create_engine(
            url, connect_args={"check_same_thread": False}, poolclass=StaticPool, json_serializer=json_text
        )
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30}, json_serializer=json_text)

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")  # derived state: rebuildable
            cursor.execute("PRAGMA secure_delete=ON")  # scrubbed personal data: zeroed, not freed
            # Pages in memory (SQLite's default: 2 MiB): see REBUILD_PAGE_CACHE_MIB.
            cursor.execute(f"PRAGMA cache_size={-1024 * int(page_cache_mib)}")
            cursor.close()

        return engine
    return server_engine(url, pool_size=5, max_overflow=5, json_serializer=json_text)
