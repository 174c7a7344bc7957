"""The operator tool pointed at the wrong place: it says what is wrong in one line, exits
non-zero, and never creates a store in place of the service's (real PostgreSQL)."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from backbone.credentials import load_or_create_sealing_keys
from backbone.signing import key_settings
from deploy.local._proc import free_ports
from ops import registry
from ops.config import Deployment, OpsError

pytestmark = pytest.mark.integration


def postgres_config(postgres, dbname: str, tmp_path, **overrides) -> Deployment:
    load_or_create_sealing_keys(tmp_path / "sealing.key")  # what deploy.keys makes for the notifier
    return Deployment(
        common={
            "STORE": "postgres",
            "POSTGRES_HOST": postgres.host,
            "POSTGRES_PORT": str(postgres.port),
            "POSTGRES_USER": postgres.user,
            "POSTGRES_PASSWORD": postgres.password,
            "POSTGRES_DBNAME": f"notifier={dbname}",  # the notifier's database, named outright
            "DATA_DIR": str(tmp_path),
            "SEALING_KEY_FILE": str(tmp_path / "sealing.key"),
            **{k.upper(): str(v) for k, v in key_settings(tmp_path / "bus", "ops-test").items()},
            **overrides,
        }
    )


def tables(postgres, dbname: str) -> list[str]:
    with psycopg.connect(postgres.dsn(dbname)) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return sorted(r[0] for r in rows)


def test_a_postgres_store_that_is_missing_empty_or_unreachable_is_refused(postgres, tmp_path):
    dbname = f"ops_{uuid.uuid4().hex[:10]}"
    deployment = postgres_config(postgres, dbname, tmp_path)
    with pytest.raises(OpsError, match=f"notifier: no event store: database '{dbname}' does not exist"):
        registry.build("notifier", deployment)
    (closed,) = free_ports(1)
    with pytest.raises(OpsError, match=f"cannot reach its event store on PostgreSQL 127.0.0.1:{closed}"):
        registry.build("notifier", postgres_config(postgres, dbname, tmp_path, POSTGRES_PORT=str(closed)))
    postgres.create_database(dbname)
    try:
        with pytest.raises(OpsError, match=r"is empty \(no notifier_events table\)"):
            registry.build("notifier", deployment)
        assert tables(postgres, dbname) == []  # the tool created nothing
        # The service's own start creates its store; then the tool opens it.
        from services.notifier.bootstrap import bootstrap

        settings = deployment.settings("notifier", registry.settings_class("notifier"))
        registry.ServiceHandle("notifier", bootstrap(settings)).close()
        registry.build("notifier", deployment).close()
        assert "notifier_events" in tables(postgres, dbname)
    finally:
        postgres.drop_database(dbname)
