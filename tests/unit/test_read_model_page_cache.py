"""SQLite's page cache per read-model connection: a rebuild's (the default) large, a running
service's small (`backbone.readmodel.SERVING_PAGE_CACHE_MIB`; see "Memory over a soak" in
docs/performance.md), and what each service's composition root asks for."""

import ast
from pathlib import Path

import sqlalchemy as sa

from backbone.readmodel import REBUILD_PAGE_CACHE_MIB, SERVING_PAGE_CACHE_MIB, ReadModel
from tests.support.system import REPO


def cache_kib(read_model: ReadModel) -> int:
    with read_model.engine.connect() as conn:
        return -conn.exec_driver_sql("PRAGMA cache_size").scalar_one()  # negative: KiB


def test_each_connection_gets_the_page_cache_asked_for(tmp_path: Path):
    rebuild = ReadModel(f"sqlite+pysqlite:///{tmp_path / 'a.sqlite3'}", sa.MetaData())
    serving = ReadModel(
        f"sqlite+pysqlite:///{tmp_path / 'b.sqlite3'}", sa.MetaData(), page_cache_mib=SERVING_PAGE_CACHE_MIB
    )
    try:
        assert cache_kib(rebuild) == REBUILD_PAGE_CACHE_MIB * 1024
        assert cache_kib(serving) == SERVING_PAGE_CACHE_MIB * 1024 < REBUILD_PAGE_CACHE_MIB * 1024
    finally:
        rebuild.close()
        serving.close()


def test_every_service_serves_with_the_small_page_cache():
    for service in ("accounts", "bookings", "notifier"):
        tree = ast.parse((REPO / "services" / service / "bootstrap.py").read_text())
        calls = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ReadModel"
        ]
        assert calls, service
        for call in calls:
            sizes = [k.value for k in call.keywords if k.arg == "page_cache_mib"]
            assert [getattr(s, "id", None) for s in sizes] == ["SERVING_PAGE_CACHE_MIB"], service
