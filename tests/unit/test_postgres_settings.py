"""PostgreSQL settings as the services' connections take them: TLS parameters, a password
with any character, pool sizes. Without a server; tests/integration/test_postgres_settings.py
connects."""

from __future__ import annotations

import sqlalchemy as sa
from eventsourcing.persistence import InfrastructureFactory

from backbone.eventstore import PostgresTLSFactory, store_env
from backbone.personal import _engine as vault_engine
from backbone.readmodel import _engine as views_engine
from services.bookings.settings import BookingsSettings

PASSWORD = "p@ss:w/rd%?#&="


def store(**env):
    settings = BookingsSettings(
        session_public_key_file="/k.pem",
        store="postgres",
        postgres_host="db.internal",
        postgres_user="bookings",
        postgres_password=PASSWORD,
        **{k.lower(): v for k, v in env.items()},
    )
    return settings.store_settings()


def test_a_password_with_any_character_survives_the_url():
    url = sa.engine.make_url(store().views_url("bookings"))
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "bookings",
        PASSWORD,
        "db.internal",
        5432,
        "bookings",
    )


def test_tls_parameters_go_to_every_connection_of_the_service():
    tls = store(POSTGRES_SSLMODE="verify-full", POSTGRES_SSLROOTCERT="/etc/ssl/db-ca.pem")
    for engine in (views_engine(tls.views_url("bookings")), vault_engine(tls.vault_url("bookings"))):
        assert dict(engine.url.query) == {"sslmode": "verify-full", "sslrootcert": "/etc/ssl/db-ca.pem"}
    env = store_env(tls, "bookings")
    assert (env["POSTGRES_SSLMODE"], env["POSTGRES_SSLROOTCERT"]) == ("verify-full", "/etc/ssl/db-ca.pem")
    factory = InfrastructureFactory.construct(env)  # not connected: its pool opens on first use
    try:
        assert type(factory) is PostgresTLSFactory
        kwargs = factory.datastore.pool.kwargs
        assert (kwargs["sslmode"], kwargs["sslrootcert"], kwargs["password"]) == (
            "verify-full",
            "/etc/ssl/db-ca.pem",
            PASSWORD,
        )
    finally:
        factory.close()
    assert "sslmode" not in store().views_url("bookings") and "POSTGRES_SSLMODE" not in store_env(
        store(), "bookings"
    )


def test_pool_sizes_are_settings():
    sized = store(POSTGRES_POOL_SIZE="8", POSTGRES_MAX_OVERFLOW="2")
    views = views_engine(sized.views_url("bookings"))
    assert (views.pool.size(), views.pool._max_overflow) == (8, 2)
    assert "pool_size" not in str(views.url)  # an option of the pool, not of the connection
    vault = vault_engine(sized.vault_url("bookings"))
    assert vault.pool.size() == 2  # the vault keeps its own small pool
    env = store_env(sized, "bookings")
    assert (env["POSTGRES_POOL_SIZE"], env["POSTGRES_MAX_OVERFLOW"]) == ("8", "2")
    defaults = views_engine(store().views_url("bookings"))
    assert (defaults.pool.size(), defaults.pool._max_overflow) == (5, 5)
