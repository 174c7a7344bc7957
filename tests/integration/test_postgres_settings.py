"""A service on a PostgreSQL that speaks TLS, with a certificate authority made on the spot:
sslmode=verify-full with the deployment's root certificate reaches it on every connection
(event store, read models, vault, the operator tool), a wrong root certificate is refused
with the reason, and a password with any character gets through."""

from __future__ import annotations

import uuid

import pytest
from psycopg import sql

from backbone.credentials import load_or_create_signing_key, public_path
from backbone.signing import key_settings
from deploy.local.postgres import LocalPostgres
from ops import registry
from ops.config import Deployment, OpsError
from services.bookings.bootstrap import bootstrap
from tests.support.certs import LocalCA

pytestmark = pytest.mark.integration

PASSWORD = "p@ss:w/rd%?#&= '\""


@pytest.fixture(scope="module")
def tls_postgres(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pg-tls")
    ca = LocalCA(directory)
    server = LocalPostgres(tls=ca.server())
    params = server.start()
    yield params, ca
    server.close()


def deployment(params, ca_file, tmp_path) -> tuple[Deployment, str]:
    """The bookings service's settings, as a role whose password has every awkward character."""
    role, database = f"bookings_{uuid.uuid4().hex[:8]}", f"bookings_{uuid.uuid4().hex[:8]}"
    with params.connect() as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(PASSWORD))
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(role))
        )
    signing = tmp_path / "session-signing-key.pem"
    load_or_create_signing_key(signing)
    env = {
        "STORE": "postgres",
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": str(params.port),
        "POSTGRES_USER": role,
        "POSTGRES_PASSWORD": PASSWORD,
        "POSTGRES_DBNAME": f"bookings={database}",  # a database of any name, for this service
        "POSTGRES_SSLMODE": "verify-full",
        "POSTGRES_SSLROOTCERT": str(ca_file),
        "POSTGRES_POOL_SIZE": "2",
        "POSTGRES_MAX_OVERFLOW": "1",
        "SESSION_PUBLIC_KEY_FILE": str(public_path(signing)),
        "DATA_DIR": str(tmp_path),
        **{k.upper(): str(v) for k, v in key_settings(tmp_path / "bus", "bookings").items()},
    }
    return Deployment(common=env), database


def connections(params, database: str) -> dict[bool, int]:
    """The server's view: its connections to `database`, by whether they use TLS."""
    with params.connect() as conn:
        rows = conn.execute(
            "SELECT s.ssl, count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
            "WHERE a.datname = %s GROUP BY s.ssl",
            (database,),
        ).fetchall()
    return dict(rows)


def test_every_connection_of_a_service_uses_verified_tls(tls_postgres, tmp_path):
    params, ca = tls_postgres
    config, database = deployment(params, ca.ca_file, tmp_path)
    settings = config.settings("bookings", registry.settings_class("bookings"))
    handle = registry.ServiceHandle("bookings", bootstrap(settings))  # creates the store
    try:
        handle.service.read_model.create()
        handle.app.vault.create_keys({uuid.uuid4()})
        assert handle.app.recorder.max_notification_id() in (None, 0)
        with handle.service.read_model.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
        seen = connections(params, database)
        assert seen.get(False, 0) == 0 and seen.get(True, 0) >= 3, seen  # event store, views, vault
        assert handle.service.read_model.engine.pool.size() == 2
        tool = registry.build("bookings", config)  # the operator tool, the same way
        tool.close()
    finally:
        handle.close()


def test_a_server_whose_certificate_the_root_certificate_does_not_sign_is_refused(tls_postgres, tmp_path):
    params, _ = tls_postgres
    stranger = LocalCA(tmp_path, "another-ca")
    config, _database = deployment(params, stranger.ca_file, tmp_path)
    with pytest.raises(OpsError, match="certificate verify failed"):
        registry.build("bookings", config)
