"""`UtcDateTime` on SQLite converts a timestamp in one step (`bind_processor`): the same text as
SQLAlchemy's two (its `process_bind_param`, then SQLite's DATETIME format), read back the same."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

from backbone.sqltypes import UtcDateTime

DIALECT = sqlite.dialect()


def _two_steps(value):
    """What SQLAlchemy does for a TypeDecorator: its `process_bind_param`, then the impl's."""
    return sa.types.TypeDecorator.bind_processor(UtcDateTime().dialect_impl(DIALECT), DIALECT)(value)


@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-9, minutes=-30)), None]),
)
def test_one_step_gives_the_text_of_the_two(moment, zone):
    value = moment.replace(tzinfo=zone) if zone is not None else moment  # naive: local time
    assert UtcDateTime().bind_processor(DIALECT)(value) == _two_steps(value)


def test_none_stays_none_and_other_databases_keep_the_two_steps():
    assert UtcDateTime().bind_processor(DIALECT)(None) is None
    from sqlalchemy.dialects.postgresql import psycopg

    moment = datetime(2026, 12, 2, 0, 30, tzinfo=UTC)
    assert UtcDateTime().bind_processor(psycopg.dialect())(moment) == moment


def test_written_and_read_back_through_sqlite():
    table = sa.Table(
        "t", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), sa.Column("at", UtcDateTime)
    )
    engine = sa.create_engine("sqlite://")
    table.create(engine)
    moments = [
        datetime(2026, 12, 2, 0, 30, 5, 123456, tzinfo=UTC),
        datetime(2026, 3, 29, 2, 30, tzinfo=timezone(timedelta(hours=2))),
        datetime(999, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 1, 23, 59, 59, tzinfo=timezone(timedelta(hours=-5))),
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(table), [{"id": n, "at": m} for n, m in enumerate(moments)])
        back = conn.execute(sa.select(table.c.at).order_by(table.c.id)).scalars().all()
    assert back == moments and all(b.tzinfo is UTC for b in back)
