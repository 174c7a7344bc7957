"""Rebuilding a service's read models from its own event log, while the service keeps serving.

The live tables keep answering while a *shadow* copy is built beside them: the same tables in
another schema (PostgreSQL) or another file (SQLite), filled by the service's own projection
functions from the event log in pages (10,000 events by default), each page in one transaction
together with the shadow's position, its rows put together in memory and written once
(`backbone.readmodel.BatchWriter`). An interrupted rebuild therefore resumes where it stopped.
(On SQLite the rows staged until the shadow has caught up, the search tokens, go to a scratch
file that commits just before the shadow does, which records how far they go: `_Staging`.)

When the shadow has caught up, one short transaction *switches*: it takes the write lock on the
live tables, puts the shadow's tables in their place (PostgreSQL: moves the tables between
schemas; SQLite: copies them in), applies the few events recorded meanwhile, and leaves the
positions at the head. Readers see the old tables or the new ones, never a mix. The service's
own projection then finds that its position moved (`backbone.follower.PositionMoved`), reloads
it and carries on from there.

A shadow remembers a fingerprint of the tables it was built for: after a deployment that
changed them, a half-built shadow is refused (start again with `fresh=True`).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import re
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import sqlalchemy as sa
from eventsourcing.persistence import find_id_convertor
from eventsourcing.utils import resolve_topic
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateIndex, CreateTable

from backbone.eventstore import _SEALED_SUBJECT, ServiceApplication
from backbone.follower import Recorded, read_log
from backbone.readmodel import AFTER_REBUILD, BatchWriter, Projection, ReadModel
from backbone.sqltypes import json_text
from ops.config import OpsError

_state = sa.MetaData()
rebuild_state = sa.Table(
    "rebuild_state",
    _state,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


@dataclass
class Report:
    read_model: str  # the projections' names
    head: int  # the last event of the log when the rebuild started
    live_position: int
    resumed_from: int | None = None  # the shadow's position when an earlier run left it
    applied: int = 0  # events applied to the shadow by this run
    switched: bool = False
    switched_at: int | None = None  # the position of the read model after the switch
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return self.applied / self.seconds if self.seconds else 0.0


class Rebuild:
    """The rebuild of one read model (with the projections that write it)."""

    def __init__(
        self,
        app: ServiceApplication,
        read_model: ReadModel,
        projections: Sequence[Projection],
        batch_size: int = 10_000,
    ):
        self.app = app
        self.live = read_model
        self.projections = list(projections)
        self.names = [p.name for p in self.projections]
        self.batch_size = batch_size
        self.shadow = _shadow_for(read_model, "_".join(self.names))
        self._read = functools.partial(_Reader(app).read, limit=batch_size)
        self._staging = _Staging(self.shadow.scratch if isinstance(self.shadow, SQLiteShadow) else None)

    @property
    def label(self) -> str:
        return ", ".join(self.names)

    def live_position(self) -> int:
        if not sa.inspect(self.live.engine).has_table(self.live.positions.name):
            return 0  # the service never started: its tables are not there yet
        return min((self.live.position(name) for name in self.names), default=0)

    def shadow_position(self) -> int | None:
        """Where an unfinished rebuild stopped; None if there is none."""
        if not self.shadow.exists():
            return None
        return min(self.shadow.read_model.position(name) for name in self.names)

    def plan(self) -> Report:
        """What a rebuild would do now (a dry run changes nothing)."""
        head = self.app.head()
        report = Report(self.label, head, self.live_position(), self.shadow_position())
        start = report.resumed_from or 0
        report.notes.append(
            f"would apply events {start + 1}..{head} to a shadow of {len(self.live.metadata.tables)} "
            f"tables ({self.shadow.where}), then switch it in"
            if head > start
            else "would switch the shadow in"
        )
        return report

    def run(
        self,
        *,
        fresh: bool = False,
        switch: bool = True,
        progress: Callable[[int, int], None] | None = None,
    ) -> Report:
        """Build (or resume) the shadow up to the head, then switch it in unless told not to.
        `progress(done, total)` is called after every batch."""
        started = time.perf_counter()
        self.live.create()  # as the service does when it starts (idempotent)
        if fresh and self.shadow.exists():
            self.shadow.drop()
        report = Report(self.label, 0, self.live_position(), self.shadow_position())
        if report.resumed_from is None:
            self.shadow.create(self._fingerprint())
            position = 0
        else:
            self._check_fingerprint()
            position = report.resumed_from
        with self.shadow.read_model.engine.begin() as conn:
            self._staging.resume(conn)  # where the staged rows stand (see `_Staging`)
        report.head = self.app.head()
        total, target = max(report.head - position, 0), report.head
        # Catch up until what is left is small enough for the switch's short write lock.
        while page := self._next_page(position):
            position, applied = page
            report.applied += applied
            if progress is not None:
                progress(report.applied, max(total, report.applied))
            if position >= target:
                if not switch:
                    break
                target = self.app.head()
                if target - position <= self.batch_size:
                    break
        if switch:
            report.switched_at = self._switch(position)
            report.switched = True
            self.shadow.drop()
        report.seconds = time.perf_counter() - started
        return report

    def discard(self) -> bool:
        """Throw away an unfinished rebuild. Returns whether there was one."""
        if not self.shadow.exists():
            return False
        self.shadow.drop()
        return True

    # ------------------------------------------------------------------ internals

    def _next_page(self, position: int) -> tuple[int, int] | None:
        """The page of the log after `position` read and applied to the shadow, with Python's
        cyclic garbage collector paused (`_collector_paused`); its last position and how many
        events it held, or None at the head."""
        with _collector_paused():
            batch = self._read(position)
            if not batch:
                return None
            self._apply_to_shadow(batch, position)
            page = batch[-1].position, len(batch)
            del batch  # freed by its reference counts before the collector is back on
        return page

    def _apply_to_shadow(self, batch: Sequence[Recorded], previous: int) -> None:
        shadow = self.shadow.read_model
        with shadow.engine.begin() as conn, self._staging.page(conn) as staging:
            self._project(conn, batch, staging)
            for name in self.names:
                shadow.advance(conn, name, batch[-1].position, previous=previous)

    def _finish_shadow(self) -> None:
        """The staged rows into their tables, once the shadow has caught up (see `_Staging`),
        and the indexes a shadow is filled without (`AFTER_REBUILD`) made from the whole tables.
        One transaction: a rebuild interrupted here does it again when resumed."""
        with self._staging.finishing(self.shadow.read_model.engine) as conn:
            self._staging.finish(conn, self.live.metadata)
            found = sa.inspect(conn)
            schema = (conn.get_execution_options().get("schema_translate_map") or {}).get(None)
            for index in _made_after(self.live.metadata):
                assert index.table is not None
                if index.name not in {i["name"] for i in found.get_indexes(index.table.name, schema=schema)}:
                    index.create(conn)

    def _switch(self, position: int) -> int:
        if isinstance(self.shadow, SQLiteShadow):
            return self._switch_sqlite(position)
        self._finish_shadow()
        with self.shadow.switching() as conn:
            self.shadow.swap(conn)
            # The events recorded since the last batch, straight into the switched tables.
            return self._project_tail(conn, position)

    def _switch_sqlite(self, position: int) -> int:
        """SQLite: the shadow catches up to the head, then its file's pages are copied over the
        live file's in one transaction (`SQLiteShadow.copy_over`); the events recorded
        meanwhile then go straight into the live tables, unless the service's own projection
        took them first (it finds its position moved and resumes from the shadow's)."""
        assert isinstance(self.shadow, SQLiteShadow)
        while page := self._next_page(position):
            position = page[0]
        self._finish_shadow()
        self.shadow.copy_over()
        with self.shadow.switching() as conn:  # the live file's write lock, until it commits
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {rebuild_state.name}"))  # copied over with the rest
            stored = conn.execute(
                sa.select(self.live.positions.c.position).where(self.live.positions.c.name.in_(self.names))
            ).scalars()
            if set(stored) != {position}:
                return position  # the service's projection took the events since: it goes on
            return self._project_tail(conn, position)

    def _project_tail(self, conn: Connection, position: int) -> int:
        """Inside the switch's transaction: the events recorded after `position` projected
        straight into the live tables, and the positions moved past them; the last one."""
        tail = position
        while batch := self._read(tail):
            self._project(conn, batch)
            tail = batch[-1].position
        if tail > position:
            for name in self.names:
                self.live.advance(conn, name, tail, previous=position)
        return tail

    def _project(self, conn: Connection, batch: Sequence[Recorded], staging: _Staging | None = None) -> None:
        writer = BatchWriter(conn, staging)  # the batch's rows put together in memory, written once
        for projection in self.projections:
            projection.read_ahead(writer, batch)
        for recorded in batch:
            for projection in self.projections:
                projection.project(writer, recorded)  # type: ignore[arg-type]
        writer.flush()

    def _fingerprint(self) -> str:
        dialect = self.live.engine.dialect
        ddl = [str(CreateTable(t).compile(dialect=dialect)) for t in self.live.metadata.sorted_tables]
        ddl += [
            str(CreateIndex(i).compile(dialect=dialect))
            for t in self.live.metadata.sorted_tables
            for i in sorted(t.indexes, key=lambda i: i.name or "")
        ]
        return hashlib.sha256("\n".join(ddl).encode()).hexdigest()

    def _check_fingerprint(self) -> None:
        if self.shadow.state().get("fingerprint") != self._fingerprint():
            raise OpsError(
                f"the unfinished rebuild of {self.label} was started for other tables (the code "
                "changed since): start again with --fresh"
            )


def _made_after(metadata: sa.MetaData) -> list[sa.Index]:
    """The indexes a shadow is filled without, made when it has caught up (`AFTER_REBUILD`)."""
    return [
        index
        for table in metadata.sorted_tables
        for index in sorted(table.indexes, key=lambda i: i.name or "")
        if index.info.get(AFTER_REBUILD)
    ]


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a page of events is decoded and projected.

    A page holds hundreds of thousands of new containers at once (the decoded events, their
    rows), none of them garbage until the page is done, and then freed by their reference counts:
    the collector, run every 700 allocations, went through each of them two or three times as
    it aged them, and through the whole heap now and then: a fifth of a rebuild's CPU. Paused
    for one page at a time (whatever cycles a page leaves are collected during the next), and
    only if it was on. Process-wide: `booking-accounts rebuild` runs in a process of its own."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# ------------------------------------------------------------------------------ staging


FINISH_SORT_THREADS = 2
"""Helper threads SQLite's sorter may use for the finish's sorts (the staged rows in their key's
order, then the index by owner; `PRAGMA threads`, 0 by default). Past its memory (about the
page cache, `SHADOW_PAGE_CACHE_MIB`) the sorter sorts and merges runs on them: at 1M events
the finish took 35 s instead of 45 s of wall clock, for about 10 s more CPU."""


class _Staging:
    """Rows written by `replace` (search tokens), kept out of their tables until the shadow has
    caught up, then put in at once, in the order of their key.

    Written as they come, rows keyed by hashes land all over their table's B-tree: each page of
    events then rewrites most of its pages, and a rebuild slows down as the table grows (at
    1M events, a gigabyte of tokens). Staged, each flush appends its rows, with the flush's
    number (`seq`), to a table without any index (`rebuild_rows_<table>`), and one row per
    owner replaced (`rebuild_replaced_<table>`: replacing with no rows deletes). `finish` then
    keeps each owner's rows of its latest replacement and inserts them sorted, in one
    statement: the database sorts once, and the table is written in order, page after page.

    Where the staging tables live: on PostgreSQL, in the shadow's schema, written in its pages'
    transactions. On SQLite, in a scratch file of their own beside the shadow (`scratch`): in
    the shadow, their pages (a quarter of its file at 1M events), freed and zeroed by
    `secure_delete` when the staging tables were dropped, were then copied over the live file by
    the switch, through its write-ahead log. The scratch file has no write-ahead log, no
    `secure_delete` and no syncing; `finish` reads it attached to the shadow's connection and
    then deletes it (the staged tokens of a customer erased meanwhile go with it). Two files
    commit separately, so the order makes a page's two halves one: the scratch commits first,
    then the shadow, which records the last `seq` its pages account for (`rebuild_state`,
    "staged"). A run killed between the two leaves rows of a later `seq` in the scratch file: the
    next run deletes them (`resume`) and projects that page again. Once `finish` has run (the
    state says "finished"), later pages write their rows straight into the tables: the staged
    rows are there, and a replacement must now delete them."""

    SCHEMA = "rebuild_staging"  # the scratch file, attached to the shadow's connection by `finishing`

    def __init__(self, scratch: Path | None = None) -> None:
        self.tables: set[sa.Table] = set()
        self.seq = 0  # of the last flush staged: its rows' `seq` (a resumed run goes on from it)
        self.finished = False  # the staged rows are in their tables: nothing is staged any more
        self.scratch = scratch
        self._made: dict[str, tuple[sa.Table, sa.Table]] = {}
        self._engine: sa.Engine | None = None
        self._page: Connection | None = None  # the scratch file's transaction of the current page
        self._attached = False  # the scratch file, to the connection of `finishing`

    # -------------------------------------------------------------- a page at a time

    def resume(self, shadow: Connection) -> None:
        """Before a run's first page: where the shadow's pages left the staging (see the class
        docstring); rows the shadow does not account for are deleted from the scratch file."""
        state = {row.key: row.value for row in shadow.execute(sa.select(rebuild_state))}
        staged = state.get("staged", "0")
        self._made.clear()
        self.tables.clear()
        self.finished = staged == "finished"
        self.seq = 0 if self.finished else int(staged)
        found = sa.inspect(shadow)
        schema = (shadow.get_execution_options().get("schema_translate_map") or {}).get(None)
        in_shadow = [n for n in found.get_table_names(schema=schema) if n.startswith("rebuild_replaced_")]
        if self.scratch is None:
            for name in in_shadow if not self.finished else ():  # as the shadow's pages left them
                replaced = sa.Table(name, sa.MetaData(), sa.Column("seq", sa.BigInteger))  # its schema mapped
                last = shadow.execute(sa.select(sa.func.max(replaced.c.seq))).scalar()
                self.seq = max(self.seq, last or 0)
            return
        if in_shadow:
            raise OpsError(  # staged in the shadow itself, by an earlier version of this code
                "the unfinished rebuild was started by an earlier version: start again with --fresh"
            )
        if self.finished:
            self.remove()  # a run killed after the finish, before the file was deleted
            return
        if not self.scratch.exists():
            if self.seq:
                raise OpsError(
                    f"the unfinished rebuild's staged rows ({self.scratch}) are gone: start again "
                    "with --fresh"
                )
            return
        with self._scratch_engine().begin() as conn:
            last = 0  # each flush staged writes its number to one table of replacements
            for name in sa.inspect(conn).get_table_names():
                if name.startswith(("rebuild_rows_", "rebuild_replaced_")):
                    conn.exec_driver_sql(f'DELETE FROM "{name}" WHERE seq > ?', (self.seq,))  # noqa: S608
                if name.startswith("rebuild_replaced_"):
                    found_last = conn.exec_driver_sql(f'SELECT max(seq) FROM "{name}"').scalar()  # noqa: S608
                    last = max(last, found_last or 0)
            if last < self.seq:  # rows the shadow counts on were never committed (not a kill -9)
                raise OpsError(
                    f"the unfinished rebuild's staged rows ({self.scratch}) are behind the shadow: "
                    "start again with --fresh"
                )

    @contextlib.contextmanager
    def page(self, shadow: Connection) -> Iterator[_Staging | None]:
        """Around a page of events projected into the shadow (inside its transaction, `shadow`):
        yields where `replace`'s rows go (None once finished: into their tables). On success
        the scratch file commits, and the shadow's transaction records the last `seq`, before
        it commits itself; on failure the scratch file's transaction is rolled back too."""
        if self.finished:
            yield None
            return
        before = self.seq
        try:
            yield self
            if self.seq != before:
                shadow.execute(sa.delete(rebuild_state).where(rebuild_state.c.key == "staged"))
                shadow.execute(sa.insert(rebuild_state).values(key="staged", value=str(self.seq)))
            if self._page is not None:
                self._page.commit()
        except BaseException:
            if self._page is not None:
                self._page.rollback()
            self.seq = before
            raise
        finally:
            if self._page is not None:
                self._page.close()
                self._page = None

    def write(
        self,
        writer: BatchWriter,
        table: sa.Table,
        owner: tuple[str, ...],
        columns: tuple[str, ...],
        rows: dict[tuple[Any, ...], tuple[bool, Sequence[tuple[Any, ...]]]],
    ) -> None:
        target = writer if self.scratch is None else BatchWriter(self._scratch_page())
        staged, replaced = self._staging_tables(target.conn, table, owner, columns)
        self.tables.add(table)
        self.seq += 1  # one per flush: a page may flush more than once
        seq = (self.seq,)
        target.insert_tuples(replaced, (*owner, "seq"), [key + seq for key in rows])
        found = [key + row + seq for key, (_, given) in rows.items() for row in given]
        if found:
            target.insert_tuples(staged, (*owner, *columns, "seq"), found)

    def _staging_tables(
        self, conn: Connection, table: sa.Table, owner: tuple[str, ...], columns: tuple[str, ...]
    ) -> tuple[sa.Table, sa.Table]:
        made = self._made.get(table.name)
        if made is None:
            meta = sa.MetaData()
            staged = sa.Table(
                f"rebuild_rows_{table.name}",
                meta,
                *[sa.Column(c, table.c[c].type) for c in (*owner, *columns)],
                sa.Column("seq", sa.BigInteger, nullable=False),
            )
            replaced = sa.Table(
                f"rebuild_replaced_{table.name}",
                meta,
                *[sa.Column(c, table.c[c].type) for c in owner],
                sa.Column("seq", sa.BigInteger, nullable=False),
            )
            meta.create_all(conn, checkfirst=True)
            made = self._made[table.name] = (staged, replaced)
        return made

    def _scratch_engine(self) -> sa.Engine:
        if self._engine is None:
            assert self.scratch is not None
            engine = sa.create_engine(f"sqlite+pysqlite:///{self.scratch}", poolclass=sa.pool.NullPool)

            @sa.event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn: Any, _: Any) -> None:
                # A rollback journal (a kill -9 mid-commit leaves the file whole); appended rows
                # need almost nothing journaled. Never synced, nothing to zero: deleted after.
                dbapi_conn.execute("PRAGMA journal_mode=TRUNCATE")
                dbapi_conn.execute("PRAGMA synchronous=OFF")
                dbapi_conn.execute("PRAGMA secure_delete=OFF")

            self._engine = engine
        return self._engine

    def _scratch_page(self) -> Connection:
        if self._page is None:
            self._page = self._scratch_engine().connect()
            self._page.begin()
        return self._page

    def remove(self) -> None:
        """Delete the scratch file (SQLite), with its journal."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        self._made.clear()
        if self.scratch is not None:
            for suffix in ("", "-journal", "-wal", "-shm"):
                self.scratch.with_name(self.scratch.name + suffix).unlink(missing_ok=True)

    # -------------------------------------------------------------- once caught up

    @contextlib.contextmanager
    def finishing(self, engine: sa.Engine) -> Iterator[Connection]:
        """A transaction on the shadow for `finish`, with the scratch file (if any) attached as
        `SCHEMA`; the scratch file deleted once it has committed."""
        self._attached = False
        if self.scratch is None or self.finished:
            with engine.begin() as conn:
                yield conn
            return
        if self._engine is not None:
            self._engine.dispose()  # its connections closed: the shadow's reads it alone now
        engine.dispose()  # the shadow's other connections closed: its journal mode can change
        with engine.connect() as conn:
            # The finish's new pages (the token table, then its index: 2 GB at 1M events) go
            # straight into the file under a rollback journal, which holds only the few pages
            # it changes; in WAL mode they went through the log first, then were copied again.
            conn.exec_driver_sql("PRAGMA busy_timeout=0")
            with contextlib.suppress(sa.exc.OperationalError):  # another connection has it open
                conn.exec_driver_sql("PRAGMA journal_mode=TRUNCATE")  # (then it stays in WAL mode)
            conn.exec_driver_sql("PRAGMA busy_timeout=30000")
            conn.exec_driver_sql(f"PRAGMA threads={FINISH_SORT_THREADS}")
            conn.commit()
            if self.scratch.exists():
                conn.exec_driver_sql(f"ATTACH DATABASE ? AS {self.SCHEMA}", (str(self.scratch),))
                conn.commit()
                self._attached = True
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.rollback()
                if self._attached:
                    conn.exec_driver_sql(f"DETACH DATABASE {self.SCHEMA}")
                    self._attached = False
                conn.exec_driver_sql("PRAGMA threads=0")
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
                conn.commit()
        self.remove()

    def finish(self, conn: Connection, metadata: sa.MetaData) -> None:
        """Put the staged rows in their tables (in the shadow, after its last page), and record
        that they are (`finished`), in the caller's transaction (`finishing`)."""
        found = sa.inspect(conn)
        if self.scratch is not None:
            where = schema = self.SCHEMA  # the scratch file, attached: named by its schema
        else:  # the shadow's own (unqualified; PostgreSQL's schema by the connection's map)
            where, schema = None, (conn.get_execution_options().get("schema_translate_map") or {}).get(None)
        staged_anywhere = self.scratch is None or self._attached
        for table in metadata.sorted_tables if staged_anywhere and not self.finished else ():
            if not found.has_table(f"rebuild_replaced_{table.name}", schema=schema):
                continue
            meta = sa.MetaData()
            staged = sa.Table(f"rebuild_rows_{table.name}", meta, autoload_with=conn, schema=where)
            replaced = sa.Table(f"rebuild_replaced_{table.name}", meta, autoload_with=conn, schema=where)
            owner = [c.name for c in replaced.columns if c.name != "seq"]
            names = [c.name for c in staged.columns if c.name != "seq"]
            # Owners replaced more than once (their customer's details changed, or were erased):
            # only their latest replacement's rows count. Found by one GROUP BY over the
            # replacements (a row per owner and flush), not looked up for every staged row (a
            # correlated subquery per row was a sixth of this step's CPU at 1M events).
            again = sa.Table(
                f"rebuild_again_{table.name}",
                meta,
                *[sa.Column(c, replaced.c[c].type, primary_key=True) for c in owner],
                sa.Column("seq", sa.BigInteger, nullable=False),
                schema=where,
            )
            again.drop(conn, checkfirst=True)  # left by a finish killed before its end (scratch)
            again.create(conn)
            conn.execute(
                sa.insert(again).from_select(
                    [*owner, "seq"],
                    sa.select(*[replaced.c[c] for c in owner], sa.func.max(replaced.c.seq))
                    .group_by(*[replaced.c[c] for c in owner])
                    .having(sa.func.count() > 1),
                )
            )
            rows = sa.select(*[staged.c[n] for n in names]).order_by(
                *[staged.c[c.name] for c in table.primary_key.columns]
            )
            if conn.execute(sa.select(sa.literal(1)).select_from(again).limit(1)).first() is not None:
                rows = rows.select_from(
                    staged.outerjoin(again, sa.and_(*[again.c[c] == staged.c[c] for c in owner]))
                ).where(sa.or_(again.c.seq.is_(None), again.c.seq == staged.c.seq))
            indexes = sorted(table.indexes, key=lambda i: i.name or "")
            for index in indexes:  # made again after, from the sorted table, not row by row
                index.drop(conn)
            conn.execute(sa.insert(table).from_select(names, rows))
            for index in indexes:
                index.create(conn)
            if self.scratch is None:
                meta.drop_all(conn)
            else:
                again.drop(conn)  # the rest goes with the file
        conn.execute(sa.delete(rebuild_state).where(rebuild_state.c.key == "staged"))
        conn.execute(sa.insert(rebuild_state).values(key="staged", value="finished"))
        self.finished = True
        self.tables.clear()
        self._made.clear()


# ------------------------------------------------------------------------------ reading


class _Reader:
    """The events of the log after a position, as `backbone.follower.read_log` gives them,
    decoded in bulk: each stored event's JSON parsed by orjson and its transcoded values
    (`{"_type_": ..., "_data_": ...}`) turned back by the application's own transcodings,
    innermost first as eventsourcing's decoder does, without its mapper's per-event work.
    Topics are resolved once each; they come from this service's own store, never from the
    bus. An event this cannot decode (a cipher or compressor configured, a class version to
    upcast, JSON orjson refuses) is decoded by the application's mapper as usual."""

    def __init__(self, app: ServiceApplication):
        self.app = app
        mapper = app.mapper
        self.bulk = mapper.cipher is None and mapper.compressor is None
        self.transcodings = mapper.transcoder.names  # type: ignore[attr-defined]
        self.classes: dict[str, Any] = {}

    def read(self, after: int, limit: int) -> list[Recorded]:
        if not self.bulk:
            return read_log(self.app, after, limit)
        notifications = self.app.recorder.select_notifications(
            start=after, limit=limit, inclusive_of_start=False
        )
        self.app.vault.preload(  # the keys of the personal data in this batch, in one query
            UUID(m.decode()) for n in notifications for m in _SEALED_SUBJECT.findall(bytes(n.state))
        )
        return [Recorded(n.id, self._event(n)) for n in notifications]

    def _event(self, stored: Any) -> Any:
        cls = self.classes.get(stored.topic)
        if cls is None:
            cls = self.classes[stored.topic] = resolve_topic(stored.topic)
        try:
            state = self._decoded(orjson.loads(stored.state))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return self.app.mapper.to_domain_event(stored)
        if "class_version" in state or getattr(cls, "class_version", 1) != 1:
            return self.app.mapper.to_domain_event(stored)  # to upcast
        state["originator_id"] = find_id_convertor(cls, type(stored.originator_id))(stored.originator_id)
        state["originator_version"] = stored.originator_version
        event = object.__new__(cls)
        object.__setattr__(event, "__dict__", state)
        return event

    def _decoded(self, value: Any) -> Any:
        if type(value) is dict:
            for key, item in value.items():
                if type(item) is dict or type(item) is list:
                    value[key] = self._decoded(item)
            if len(value) == 2 and "_type_" in value and "_data_" in value:
                return self.transcodings[value["_type_"]].decode(value["_data_"])
            return value
        return [self._decoded(v) if type(v) is dict or type(v) is list else v for v in value]


# ------------------------------------------------------------------------------ shadows


class Shadow(ABC):
    """Where a read model is rebuilt, and how it is switched in."""

    where: str

    def __init__(self, live: ReadModel, label: str):
        self.live = live
        self.label = label
        self.read_model = self._open()

    @abstractmethod
    def _open(self) -> ReadModel: ...

    @abstractmethod
    def exists(self) -> bool: ...

    @abstractmethod
    def drop(self) -> None: ...

    @abstractmethod
    def switching(self) -> contextlib.AbstractContextManager[Connection]:
        """A transaction on the live database that holds the write lock on its tables."""

    @abstractmethod
    def swap(self, conn: Connection) -> None:
        """Inside `switching()`: put the shadow's tables in place of the live ones."""

    def create(self, fingerprint: str) -> None:
        self.read_model.create()
        _state.create_all(self.read_model.engine)
        with self.read_model.engine.begin() as conn:
            for index in _made_after(self.live.metadata):  # made when it has caught up
                index.drop(conn)
            conn.execute(sa.delete(rebuild_state))
            conn.execute(
                sa.insert(rebuild_state),
                [
                    {"key": "fingerprint", "value": fingerprint},
                    {"key": "started_at", "value": datetime.now(UTC).isoformat()},
                ],
            )

    def state(self) -> dict[str, str]:
        with self.read_model.engine.connect() as conn:
            return {row.key: row.value for row in conn.execute(sa.select(rebuild_state))}


SHADOW_PAGE_CACHE_MIB = 256
"""SQLite's page cache of a shadow's connection (the rebuilding process only; a serving
connection's is `SERVING_PAGE_CACHE_MIB`). A page of events upserts rows keyed by UUIDs (bookings,
their history) all over their primary keys' B-trees: at 1M events those indexes alone are
about 75 MB, and with the 64 MiB of `REBUILD_PAGE_CACHE_MIB` each page of events read many of
their pages back from the file, more of them the longer the log. SQLite's sorter (the staged
rows' ORDER BY, the indexes made at the end) also sorts in memory up to this size before it
spills to temporary files. Allocated as pages are used, so a small shadow takes little."""


class SQLiteShadow(Shadow):
    """A second SQLite file beside the live one; switched in by copying its pages over the live
    file's (SQLite's online backup, in one step: one write transaction on the live file, so
    readers go on reading the old content until it commits, then the new).

    Not by renaming the file into place: the service keeps the live file open, and SQLite
    forbids renaming or unlinking a database file in use (its connections would go on with
    the old file, and its write-ahead log would then belong to two files). A page copy is
    sequential and needs neither SQL nor indexes rebuilt: much cheaper than copying the rows.

    The shadow's writes are not synced to disk (`synchronous=OFF`): a process that dies
    mid-rebuild loses nothing the operating system has been given, so the rebuild resumes;
    after a machine crash during a rebuild, start it again with `--fresh`.

    The rows staged until the shadow has caught up are in a scratch file beside it
    (`<live>.rebuild-staging`, see `_Staging`), deleted once they are in their tables, and
    with the shadow (`drop`: after the switch, `--fresh`, `--discard`)."""

    def _open(self) -> ReadModel:
        live = Path(sa.engine.make_url(self.live.url).database or "")
        self.live_path = live
        self.path = live.with_name(live.name + ".rebuild")
        self.scratch = live.with_name(live.name + ".rebuild-staging")  # see `_Staging`
        self.where = str(self.path)
        shadow = ReadModel(
            f"sqlite+pysqlite:///{self.path}", self.live.metadata, page_cache_mib=SHADOW_PAGE_CACHE_MIB
        )

        @sa.event.listens_for(shadow.engine, "connect")
        def _unsynced(dbapi_conn: Any, _: Any) -> None:
            dbapi_conn.execute("PRAGMA synchronous=OFF")  # a shadow is rebuilt, never recovered

        return shadow

    def create(self, fingerprint: str) -> None:
        self.drop()  # what a shadow left without its state (e.g. a crash in `create`)
        super().create(fingerprint)

    def copy_over(self) -> None:
        """Copy the shadow's pages over the live file (see the class docstring)."""
        self.read_model.close()
        source = sqlite3.connect(self.path)
        target = sqlite3.connect(self.live_path, timeout=30)
        try:
            source.backup(target, pages=-1, sleep=0.05)  # retried while the live file is busy
        finally:
            source.close()
            target.close()

    def exists(self) -> bool:
        if not self.path.exists():
            return False
        return sa.inspect(self.read_model.engine).has_table(rebuild_state.name)

    def drop(self) -> None:
        self.read_model.close()
        for path in (self.path, self.scratch):
            for suffix in ("", "-wal", "-shm", "-journal"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)
        self.read_model = self._open()

    @contextlib.contextmanager
    def switching(self) -> Iterator[Connection]:
        engine = sa.create_engine(self.live.url, connect_args={"timeout": 30}, json_serializer=json_text)

        @sa.event.listens_for(engine, "connect")
        def _attach(dbapi_conn: Any, _: Any) -> None:
            dbapi_conn.isolation_level = None  # we say BEGIN ourselves (below)
            dbapi_conn.execute("ATTACH DATABASE ? AS shadow", (str(self.path),))

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock, now: no other writer

        try:
            with engine.begin() as conn:
                yield conn
        finally:
            engine.dispose()

    def swap(self, conn: Connection) -> None:
        # Unqualified names are the live file's ("main" comes before attached databases).
        copies = sa.MetaData()
        for table in self.live.metadata.sorted_tables:
            shadow = table.to_metadata(copies, schema="shadow")
            table.drop(conn, checkfirst=True)
            table.create(conn)  # with its indexes, as the code defines them now
            conn.execute(sa.insert(table).from_select(list(table.columns.keys()), sa.select(*shadow.columns)))


class PostgresShadow(Shadow):
    """A schema of its own in the service's database; switched in by moving tables between
    schemas (instant, whatever the size), under an exclusive lock on the live tables."""

    def _open(self) -> ReadModel:
        with self.live.engine.connect() as conn:
            self.schema = conn.exec_driver_sql("SELECT current_schema()").scalar() or "public"
        slug = re.sub(r"[^a-z0-9_]", "_", self.label.lower())[:40]
        self.shadow_schema, self.retired_schema = f"rebuild_{slug}", f"retired_{slug}"
        self.where = f"schema {self.shadow_schema}"
        shadow = ReadModel(self.live.url, self.live.metadata)
        self._engine = shadow.engine
        shadow.engine = shadow.engine.execution_options(schema_translate_map={None: self.shadow_schema})
        return shadow

    def exists(self) -> bool:
        return sa.inspect(self._engine).has_table(rebuild_state.name, schema=self.shadow_schema)

    def create(self, fingerprint: str) -> None:
        with self._engine.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{self.shadow_schema}"')
        super().create(fingerprint)

    def drop(self) -> None:
        with self._engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{self.shadow_schema}" CASCADE')

    @contextlib.contextmanager
    def switching(self) -> Iterator[Connection]:
        tables = [t.name for t in self.live.metadata.sorted_tables]
        with self._engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL lock_timeout = '30s'")
            live = [t for t in tables if sa.inspect(conn).has_table(t, schema=self.schema)]
            if live:
                names = ", ".join(f'"{self.schema}"."{t}"' for t in live)
                conn.exec_driver_sql(f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE")
            yield conn
        with self._engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{self.retired_schema}" CASCADE')

    def swap(self, conn: Connection) -> None:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{self.retired_schema}" CASCADE')
        conn.exec_driver_sql(f'CREATE SCHEMA "{self.retired_schema}"')
        for table in self.live.metadata.sorted_tables:
            if sa.inspect(conn).has_table(table.name, schema=self.schema):
                conn.exec_driver_sql(
                    f'ALTER TABLE "{self.schema}"."{table.name}" SET SCHEMA "{self.retired_schema}"'
                )
            conn.exec_driver_sql(
                f'ALTER TABLE "{self.shadow_schema}"."{table.name}" SET SCHEMA "{self.schema}"'
            )


def _shadow_for(read_model: ReadModel, label: str) -> Shadow:
    dialect = read_model.engine.dialect.name
    if dialect == "sqlite":
        if ":memory:" in read_model.url:
            raise OpsError("an in-memory read model cannot be rebuilt from another process")
        return SQLiteShadow(read_model, label)
    if dialect == "postgresql":
        return PostgresShadow(read_model, label)
    raise OpsError(f"cannot rebuild a read model on {dialect}")
