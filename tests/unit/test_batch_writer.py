"""A projection given a `BatchWriter` leaves the same tables as one given a plain connection:
the same statements in the same order, whichever of them are put together in memory (and
reads the same values on the way)."""

from __future__ import annotations

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backbone.readmodel import BatchWriter, delete, insert, prefetch, replace, update, upsert, value

metadata = sa.MetaData()
rows = sa.Table(
    "rows",
    metadata,
    sa.Column("row_id", sa.String(8), primary_key=True),
    sa.Column("status", sa.String(8), nullable=True),
    sa.Column("amount", sa.Integer, nullable=True),
)
tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("row_id", sa.String(8), primary_key=True),
    sa.Column("token", sa.String(8), primary_key=True),
    sa.Column("tenant", sa.String(8), nullable=False),
)

ids = st.sampled_from(["a", "b", "c"])
steps = st.lists(
    st.one_of(
        st.tuples(st.just("upsert"), ids, st.sampled_from(["new", "old"]), st.integers(0, 9)),
        st.tuples(st.just("insert-if-absent"), ids),
        st.tuples(st.just("update"), ids, st.sampled_from(["paid", "gone"])),
        st.tuples(st.just("add"), ids, st.integers(1, 5)),  # read, then write: as a payment does
        st.tuples(st.just("update-all"), st.sampled_from(["x", "y"])),  # no key: runs in order
        st.tuples(st.just("set"), ids, st.sampled_from(["paid", "gone"]), st.integers(0, 9)),
        st.tuples(st.just("add-value"), ids, st.integers(1, 5)),
        st.tuples(st.just("read-ahead"), st.lists(ids, max_size=3)),  # as a batch's start does
        st.tuples(st.just("delete-status"), st.sampled_from(["new", "old", "paid", "before"])),
        st.tuples(st.just("reindex"), ids, st.lists(st.sampled_from(["t1", "t2", "t3"]), max_size=3)),
        st.tuples(st.just("drop-tokens"), ids),
        st.tuples(st.just("drop-token"), ids, st.sampled_from(["t1", "t2"])),
        st.tuples(st.just("drop-tenant"), st.sampled_from(["x", "y"])),
        st.tuples(st.just("replace"), ids, st.lists(st.sampled_from(["t1", "t2", "t3"]), max_size=3)),
        st.tuples(st.just("place"), st.sampled_from(["d", "e"]), st.sampled_from(["t1", "t2"])),
    ),
    max_size=16,
)


_placed: set[str] = set()  # owners given rows as new in this run ("place")


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
    elif kind == "update-all":
        conn.execute(sa.update(rows).values(status=step[1]))
    elif kind == "set":
        update(conn, rows, {"row_id": step[1]}, {"status": step[2], "amount": step[3]})
    elif kind == "add-value":
        amount = value(conn, rows, "amount", {"row_id": step[1]})
        if amount is not None:
            update(conn, rows, {"row_id": step[1]}, {"amount": amount + step[2]})
        return amount
    elif kind == "read-ahead":
        prefetch(conn, rows, ("amount", "status"), step[1])
    elif kind == "delete-status":
        delete(conn, rows, {"status": step[1]})
    elif kind == "reindex":  # as a projection replaces a row's search tokens
        delete(conn, tokens, {"row_id": step[1]})
        tenant = "x" if step[1] < "b" else "y"
        insert(conn, tokens, [{"row_id": step[1], "token": t, "tenant": tenant} for t in set(step[2])])
    elif kind == "drop-tokens":
        delete(conn, tokens, {"row_id": step[1]})
    elif kind == "drop-token":
        delete(conn, tokens, {"row_id": step[1], "token": step[2]})
    elif kind == "replace":  # the same, by owner: tuples, no bookkeeping per row
        tenant = "x" if step[1] < "b" else "y"
        replace(
            conn,
            tokens,
            {"row_id": step[1]},
            ("token", "tenant"),
            [(t, tenant) for t in sorted(set(step[2]))],
        )
    elif kind == "place":  # rows of an owner said to be new: only the first time (a booking placed)
        if step[1] not in _placed:
            _placed.add(step[1])
            replace(conn, tokens, {"row_id": step[1]}, ("tenant", "token"), [("x", step[2])], new=True)
    else:
        delete(conn, tokens, {"tenant": step[1]})
    return None


def table_after(steps_, batched: bool) -> tuple[list, list, list]:
    engine = sa.create_engine("sqlite+pysqlite:///:memory:")
    metadata.create_all(engine)
    with engine.begin() as conn:
        upsert(conn, rows, {"row_id": "c", "status": "before", "amount": 1}, keys=["row_id"])
        insert(conn, tokens, [{"row_id": "c", "token": "t1", "tenant": "y"}])
    _placed.clear()
    with engine.begin() as conn:
        writer = BatchWriter(conn) if batched else conn
        read = [run(writer, step) for step in steps_]
        if batched:
            writer.flush()
    with engine.connect() as conn:
        found = [tuple(r) for r in conn.execute(sa.select(rows).order_by(rows.c.row_id))]
        indexed = [
            tuple(r) for r in conn.execute(sa.select(tokens).order_by(tokens.c.row_id, tokens.c.token))
        ]
    engine.dispose()
    return found, indexed, read


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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


def test_rows_replaced_by_owner_are_written_in_one_statement_and_new_owners_delete_nothing():
    engine = sa.create_engine("sqlite+pysqlite:///:memory:")
    metadata.create_all(engine)
    statements = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with engine.begin() as conn:
        writer = BatchWriter(conn)
        for n in range(50):
            rows_ = [(f"t{k}", "x") for k in range(5)]
            replace(writer, tokens, {"row_id": f"r{n}"}, ("token", "tenant"), rows_, new=True)
        replace(writer, tokens, {"row_id": "r7"}, ("token", "tenant"), [("t9", "x")])  # replaced again
        writer.flush()
    written = list(statements)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tokens)).scalar() == 49 * 5 + 1
        assert conn.execute(sa.select(tokens.c.token).where(tokens.c.row_id == "r7")).scalars().all() == [
            "t9"
        ]
    assert [s.split()[0] for s in written] == ["INSERT"]  # r7 was new in this batch: no DELETE


def _twenty_rows_recorded() -> tuple[sa.Engine, list[str]]:
    """An in-memory table of rows r0..r19 (amount n), and the SQL run on it from now on."""
    engine = sa.create_engine("sqlite+pysqlite:///:memory:")
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(rows), [{"row_id": f"r{n}", "status": "new", "amount": n} for n in range(20)])
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    return engine, statements


def test_reading_a_row_not_in_memory_leaves_the_batch_in_memory():
    """As a payment's projection does: the amount paid so far read, then updated, row after row:
    the reads go to the table, the updates are written together at the end."""
    engine, statements = _twenty_rows_recorded()
    with engine.begin() as conn:
        writer = BatchWriter(conn)
        for n in range(20):
            paid = value(writer, rows, "amount", {"row_id": f"r{n}"})
            update(writer, rows, {"row_id": f"r{n}"}, {"amount": paid + 100})
        assert value(writer, rows, "amount", {"row_id": "r3"}) == 103  # in memory: written first
        writer.flush()
    written = [s.split()[0] for s in statements]
    with engine.connect() as conn:
        assert conn.execute(sa.select(rows.c.amount).order_by(rows.c.amount)).scalars().all() == [
            n + 100 for n in range(20)
        ]
    assert written == ["SELECT"] * 20 + ["UPDATE", "SELECT"]  # one UPDATE for the twenty rows


def test_rows_read_ahead_answer_the_batch_in_one_query():
    """`prefetch` before a batch of payments: one SELECT for all of them, then one UPDATE."""
    engine, statements = _twenty_rows_recorded()
    with engine.begin() as conn:
        writer = BatchWriter(conn)
        prefetch(writer, rows, ("amount",), [f"r{n}" for n in range(20)] + ["absent"])
        for n in [*range(20), 3]:  # r3 paid twice: the second read sees the first payment
            paid = value(writer, rows, "amount", {"row_id": f"r{n}"})
            update(writer, rows, {"row_id": f"r{n}"}, {"amount": paid + 100})
        assert value(writer, rows, "amount", {"row_id": "absent"}) is None
        writer.flush()
    written = [s.split()[0] for s in statements]
    with engine.connect() as conn:
        amounts = conn.execute(sa.select(rows.c.amount).order_by(rows.c.row_id)).scalars().all()
    assert sorted(amounts) == sorted([n + 100 for n in range(20) if n != 3] + [203])
    assert written == ["SELECT", "SELECT", "UPDATE"]  # read ahead; "absent" asked again; written
