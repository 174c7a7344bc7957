"""What a rebuild must give: exactly the rows of the live projection (tests of each service)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from backbone.follower import read_log
from backbone.readmodel import Projection, ReadModel
from ops.rebuild import Rebuild


def live(app: Any, read_model: ReadModel, name: str, project: Callable) -> None:
    """Project what is new in the log as the running service does right after a save: a
    batch of what was just saved, here one event at a time (the most unlike a rebuild)."""
    projection = Projection(app, read_model, name, project)
    position = read_model.position(name)
    while batch := read_log(app, position, 1):
        projection.apply(batch)
        position = batch[-1].position


def rows(read_model: ReadModel, metadata: sa.MetaData, plain: Callable[[sa.Table, dict], dict]) -> dict:
    """Every table's rows, sorted, through `plain` (sealed columns opened: each sealing has a
    fresh nonce, so two projections of one log hold different ciphertexts of the same values)."""
    with read_model.engine.connect() as conn:
        return {
            table.name: sorted(
                tuple(map(str, plain(table, dict(row)).values()))
                for row in conn.execute(sa.select(table)).mappings()
            )
            for table in metadata.sorted_tables
        }


def rebuilt(
    app: Any,
    metadata: sa.MetaData,
    name: str,
    project: Callable,
    folder: Path,
    page: int,
    plain: Callable[[sa.Table, dict], dict],
) -> dict:
    """The rows of the read model rebuilt from the whole log by `ops.rebuild` in pages of
    `page` events (into a new SQLite file: shadow, then switch)."""
    folder.mkdir(parents=True, exist_ok=True)
    read_model = ReadModel(f"sqlite+pysqlite:///{folder / 'views.sqlite3'}", metadata)
    try:
        report = Rebuild(app, read_model, [Projection(app, read_model, name, project)], page).run()
        assert report.switched and report.switched_at == app.head()
        return rows(read_model, metadata, plain)
    finally:
        read_model.close()
