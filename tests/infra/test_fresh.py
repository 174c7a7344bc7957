"""`./deploy/up --fresh` clears the services' PostgreSQL databases too, or refuses and says why
(deploy/local/fresh.py), on a real PostgreSQL server."""

from __future__ import annotations

import uuid

import pytest

from deploy.local._proc import free_ports
from deploy.local.fresh import FreshRefused, clear_postgres, postgres_stores

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


def _envs(postgres, prefix: str, port: int | None = None) -> dict[str, dict[str, str]]:
    common = {
        "STORE": "postgres",
        "POSTGRES_HOST": postgres.host,
        "POSTGRES_PORT": str(port or postgres.port),
        "POSTGRES_USER": postgres.user,
        "POSTGRES_PASSWORD": postgres.password,
    }
    # POSTGRES_DBNAME is a prefix: the databases are <prefix>_accounts and <prefix>_bookings.
    return {name: {**common, "POSTGRES_DBNAME": prefix} for name in ("accounts", "bookings")}


def _tables(postgres, dbname: str) -> list[str]:
    with postgres.connect(dbname) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return [r[0] for r in rows]


def test_fresh_empties_every_service_database_and_keeps_it_usable(postgres):
    prefix = f"fresh{uuid.uuid4().hex[:8]}"
    envs = _envs(postgres, prefix)
    databases = [f"{prefix}_{name}" for name in envs]
    for database in databases:
        postgres.create_database(database)
        with postgres.connect(database) as conn:
            conn.execute("CREATE TABLE tracking (name text, position int)")
    try:
        done = clear_postgres(postgres_stores(envs))
        assert len(done) == 2 and all("cleared PostgreSQL database" in line for line in done)
        for database in databases:
            assert _tables(postgres, database) == []  # empty, and there to connect to
    finally:
        for database in databases:
            postgres.drop_database(database)


def test_fresh_refuses_and_deletes_nothing_when_a_database_cannot_be_reached(postgres):
    prefix = f"fresh{uuid.uuid4().hex[:8]}"
    reachable = _envs(postgres, prefix)
    unreachable = _envs(postgres, prefix, port=free_ports(1)[0])
    envs = {"accounts": reachable["accounts"], "bookings": unreachable["bookings"]}
    postgres.create_database(f"{prefix}_accounts")
    with postgres.connect(f"{prefix}_accounts") as conn:
        conn.execute("CREATE TABLE kept (x int)")
    try:
        with pytest.raises(FreshRefused, match=r"cannot reach PostgreSQL.*Nothing was deleted"):
            clear_postgres(postgres_stores(envs))
        assert _tables(postgres, f"{prefix}_accounts") == ["kept"]
    finally:
        postgres.drop_database(f"{prefix}_accounts")


def test_only_postgres_stores_are_cleared_and_a_shared_database_once():
    shared = {"STORE": "postgres", "POSTGRES_DBNAME": "bookings=shared,notifier=shared"}
    envs = {"accounts": {"STORE": "sqlite"}, "bookings": shared, "notifier": shared}
    assert [s.dbname for s in postgres_stores(envs)] == ["shared"]


def test_the_databases_cleared_are_the_ones_the_services_use():
    """`POSTGRES_DBNAME` as the services read it (backbone.settings.postgres_database)."""
    names = ("accounts", "bookings", "notifier")
    prefix = {name: {"STORE": "postgres", "POSTGRES_DBNAME": "booking"} for name in names}
    assert [s.dbname for s in postgres_stores(prefix)] == [f"booking_{name}" for name in names]
    unset = {name: {"STORE": "postgres"} for name in names}
    assert [s.dbname for s in postgres_stores(unset)] == list(names)
