"""A read model whose tables the code changed since they were created (a deployment added a
table or a column) is dropped and created afresh at start, positions included, so that its
projections rebuild it from the log; tables of the right shape are kept as they are."""

from __future__ import annotations

import sqlalchemy as sa

from backbone.readmodel import ReadModel


def shapes(extra_column: bool, extra_table: bool) -> sa.MetaData:
    metadata = sa.MetaData()
    columns = [sa.Column("id", sa.String(36), primary_key=True), sa.Column("name", sa.String(50))]
    if extra_column:
        columns.append(sa.Column("phone", sa.String(30)))
    sa.Table("people", metadata, *columns)
    if extra_table:
        sa.Table("visits", metadata, sa.Column("id", sa.String(36), primary_key=True))
    return metadata


def open_at(url: str, **shape: bool) -> ReadModel:
    read_model = ReadModel(url, shapes(**shape))
    read_model.create()
    return read_model


def test_changed_tables_are_rebuilt_from_the_log_and_unchanged_ones_kept(tmp_path):
    url = f"sqlite+pysqlite:///{tmp_path / 'views.sqlite3'}"
    old = open_at(url, extra_column=False, extra_table=False)
    with old.engine.begin() as conn:
        conn.execute(sa.insert(old.metadata.tables["people"]).values(id="1", name="Ada"))
        old.advance(conn, "views", 7)
    old.close()

    same = open_at(url, extra_column=False, extra_table=False)
    assert same.position("views") == 7  # nothing changed: kept
    same.close()

    for shape in ({"extra_column": True, "extra_table": False}, {"extra_column": True, "extra_table": True}):
        new = open_at(url, **shape)
        assert new.position("views") == 0  # rebuilt from the start of the log
        with new.engine.connect() as conn:
            assert conn.execute(sa.select(new.metadata.tables["people"])).all() == []
        with new.engine.begin() as conn:
            conn.execute(sa.insert(new.metadata.tables["people"]).values(id="2", name="Bo", phone="+43 1"))
            new.advance(conn, "views", 3)
        new.close()
    again = open_at(url, extra_column=True, extra_table=True)
    assert again.position("views") == 3
    again.close()
