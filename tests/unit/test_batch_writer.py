"""A projection given a `BatchWriter` leaves the same tables as one given a plain connection:
the same statements in the same order, whichever of them are put together in memory."""

from __future__ import annotations

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backbone.readmodel import BatchWriter, upsert

metadata = sa.MetaData()
rows = sa.Table(
    "rows",
    metadata,
    sa.Column("row_id", sa.String(8), primary_key=True),
    sa.Column("status", sa.String(8), nullable=True),
    sa.Column("amount", sa.Integer, nullable=True),
)

ids = st.sampled_from(["a", "b", "c"])
steps = st.lists(
    st.one_of(
        st.tuples(st.just("upsert"), ids, st.sampled_from(["new", "old"]), st.integers(0, 9)),
        st.tuples(st.just("insert-if-absent"), ids),
        st.tuples(st.just("update"), ids, st.sampled_from(["paid", "gone"])),
        st.tuples(st.just("add"), ids, st.integers(1, 5)),  # read, then write: as a payment does
        st.tuples(st.just("update-all"), st.sampled_from(["x", "y"])),  # no key: runs in order
    ),
    max_size=12,
)


def run(conn, step) -> None:
    kind = step[0]
    if kind == "upsert":
        upsert(conn, rows, {"row_id": step[1], "status": step[2], "amount": step[3]}, keys=["row_id"])
    elif kind == "insert-if-absent":
        upsert(conn, rows, {"row_id": step[1]}, keys=["row_id"])
    elif kind == "update":
        conn.execute(sa.update(rows).where(rows.c.row_id == step[1]).values(status=step[2]))
    elif kind == "add":
        amount = conn.execute(sa.select(rows.c.amount).where(rows.c.row_id == step[1])).scalar()
        if amount is not None:
            conn.execute(sa.update(rows).where(rows.c.row_id == step[1]).values(amount=amount + step[2]))
    else:
        conn.execute(sa.update(rows).values(status=step[1]))


def table_after(steps_, batched: bool) -> list[tuple]:
    engine = sa.create_engine("sqlite+pysqlite:///:memory:")
    metadata.create_all(engine)
    with engine.begin() as conn:
        upsert(conn, rows, {"row_id": "c", "status": "before", "amount": 1}, keys=["row_id"])
    with engine.begin() as conn:
        writer = BatchWriter(conn) if batched else conn
        for step in steps_:
            run(writer, step)
        if batched:
            writer.flush()
    with engine.connect() as conn:
        found = [tuple(r) for r in conn.execute(sa.select(rows).order_by(rows.c.row_id))]
    engine.dispose()
    return found


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_a_batch_writer_leaves_the_same_rows_as_each_statement_in_turn(steps_):
    assert table_after(steps_, batched=True) == table_after(steps_, batched=False)


def test_rows_upserted_then_updated_are_written_once():
    engine = sa.create_engine("sqlite+pysqlite:///:memory:")
    metadata.create_all(engine)
    statements = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with engine.begin() as conn:
        writer = BatchWriter(conn)
        for n in range(50):
            upsert(writer, rows, {"row_id": f"r{n}", "status": "new", "amount": n}, keys=["row_id"])
            writer.execute(sa.update(rows).where(rows.c.row_id == f"r{n}").values(status="paid"))
        writer.flush()
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).where(rows.c.status == "paid")).scalar() == 50
    assert len([s for s in statements if "INSERT" in s]) == 1
