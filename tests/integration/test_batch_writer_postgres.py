"""On PostgreSQL a `BatchWriter` upserts and updates many rows of one shape in one statement
(`COPY` into a temporary table, then `INSERT ... ON CONFLICT` or `UPDATE ... FROM`): the table
ends as it does when each statement runs in turn, whatever the column types (JSON, timestamps,
decimals, booleans, NULLs), in the schema the connection maps the table to (a rebuild's shadow)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from backbone.readmodel import SET_BASED_ROWS, BatchWriter, update, upsert
from backbone.sqltypes import UtcDateTime, json_text

metadata = sa.MetaData()
things = sa.Table(
    "things",
    metadata,
    sa.Column("thing_id", sa.String(36), primary_key=True),
    sa.Column("amount", sa.Numeric(14, 2), nullable=False),
    sa.Column("at", UtcDateTime, nullable=True),
    sa.Column("done", sa.Boolean, nullable=False),
    sa.Column("facts", sa.JSON, nullable=False),
    sa.Column("note", sa.Text, nullable=True),
)
parts = sa.Table(  # keyed by two columns, one of them not text
    "parts",
    metadata,
    sa.Column("thing_id", sa.String(36), primary_key=True),
    sa.Column("n", sa.Integer, primary_key=True),
)

N = SET_BASED_ROWS + 50
BEFORE = [f"t{n:03}" for n in range(0, N, 2)]  # every other row is in the table already
T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


def statements(conn) -> None:
    for n in range(N):
        upsert(
            conn,
            things,
            {
                "thing_id": f"t{n:03}",
                "amount": Decimal(n) / 4,
                "at": T0 + timedelta(minutes=n) if n % 3 else None,
                "done": n % 2 == 0,
                "facts": {"n": n, "it's": ["a", None, "\t\n\\"]} if n % 5 else None,
                "note": None if n % 7 else "ünïcode, tab\there",
            },
            keys=["thing_id"],
        )
        upsert(conn, parts, {"thing_id": f"t{n:03}", "n": n % 3}, keys=["thing_id", "n"])
    for n in range(N, 2 * N):  # updates of rows not in memory: half of them in the table
        update(conn, things, {"thing_id": f"t{n - N + 1:03}"}, {"note": f"updated {n}", "done": True})


def tables(engine, schema_map) -> list:
    with engine.connect().execution_options(schema_translate_map=schema_map) as conn:
        return [
            [tuple(r) for r in conn.execute(sa.select(t).order_by(*t.primary_key.columns))]
            for t in (things, parts)
        ]


@pytest.fixture
def engine(postgres):
    database = f"batch_{uuid.uuid4().hex[:8]}"
    postgres.create_database(database)
    engine = sa.create_engine(postgres.sqlalchemy_url(database), json_serializer=json_text)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA shadow")
        for schema in (None, "shadow"):
            metadata.create_all(conn.execution_options(schema_translate_map={None: schema}))
    yield engine
    engine.dispose()
    postgres.drop_database(database)


def test_many_rows_upserted_and_updated_at_once_leave_what_each_statement_would(engine):
    for schema in (None, "shadow"):
        with engine.begin() as conn:
            conn = conn.execution_options(schema_translate_map={None: schema})
            for thing in BEFORE:
                upsert(
                    conn,
                    things,
                    {"thing_id": thing, "amount": 1, "at": None, "done": False, "facts": [], "note": "old"},
                    keys=["thing_id"],
                )
    with engine.begin() as conn:  # each statement in turn, in the live schema
        statements(conn)
    with engine.begin() as conn:  # batched, in the shadow: as a rebuild's page
        writer = BatchWriter(conn.execution_options(schema_translate_map={None: "shadow"}))
        statements(writer)
        writer.flush()
        temporary = sa.text("SELECT count(*) FROM pg_tables WHERE schemaname LIKE 'pg_temp%'")
        assert writer.conn.execute(temporary).scalar() == 0  # the batch's table dropped once used
    live, shadow = tables(engine, {None: None}), tables(engine, {None: "shadow"})
    assert shadow == live
    assert len(live[0]) == N and len(live[1]) == N
    assert sum(1 for row in live[0] if row[5] and row[5].startswith("updated")) == N - 1  # one not there


def test_rows_that_are_all_key_are_inserted_once_whether_there_or_not(engine):
    with engine.begin() as conn:
        upsert(conn, parts, {"thing_id": "same", "n": 0}, keys=["thing_id", "n"])
    with engine.begin() as conn:
        writer = BatchWriter(conn)
        for n in range(N):  # ON CONFLICT DO NOTHING: no column to update
            upsert(writer, parts, {"thing_id": "same", "n": n}, keys=["thing_id", "n"])
        writer.flush()
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(parts)).scalar() == N
