"""PostgreSQL settings as the services' connections take them: TLS parameters, a password
with any character, pool sizes, and the rule of POSTGRES_DBNAME (one database per service).
Without a server; tests/integration/test_postgres_settings.py connects."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from eventsourcing.persistence import InfrastructureFactory
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import ValidationError

from backbone.eventstore import PostgresTLSFactory, store_env
from backbone.personal import _engine as vault_engine
from backbone.readmodel import _engine as views_engine
from ops.config import Deployment, OpsError
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


# ------------------------------------------------------------- one database per service

SERVICES = ("accounts", "bookings", "notifier")


def databases(setting: str | None) -> list[str]:
    settings = store(**({"POSTGRES_DBNAME": setting} if setting is not None else {}))
    return [settings.postgres_database(service) for service in SERVICES]


def test_postgres_dbname_is_a_prefix_or_a_mapping_never_one_shared_database():
    assert databases(None) == databases("") == ["accounts", "bookings", "notifier"]
    assert databases("booking") == ["booking_accounts", "booking_bookings", "booking_notifier"]
    assert databases(" accounts=acc, bookings = bk,notifier=nt ") == ["acc", "bk", "nt"]
    assert databases("accounts=one,bookings=one,notifier=one") == ["one"] * 3  # only said outright
    prefixed = store(POSTGRES_DBNAME="booking")
    assert sa.engine.make_url(prefixed.views_url("bookings")).database == "booking_bookings"
    assert sa.engine.make_url(prefixed.vault_url("notifier")).database == "booking_notifier"
    assert store_env(prefixed, "accounts")["POSTGRES_DBNAME"] == "booking_accounts"


@given(st.text(alphabet=st.characters(blacklist_characters="=,", blacklist_categories=("Cs",)), max_size=40))
def test_one_value_for_every_service_gives_each_its_own_database(prefix):
    assume(len(f"{prefix.strip()}_notifier".encode()) <= 63)  # longer ones are refused (below)
    assert len(set(databases(prefix))) == len(SERVICES)


def test_a_mapping_that_does_not_name_the_service_stops_it_with_the_reason():
    one = store(POSTGRES_DBNAME="bookings=legacy_bookings")  # one service pointed elsewhere
    assert one.postgres_database("bookings") == "legacy_bookings"
    with pytest.raises(ValueError, match="names the databases of bookings but not of notifier"):
        one.postgres_database("notifier")
    for malformed in ("accounts=a,bookings", "accounts=a,,bookings=b", "=a", "accounts=a=b"):
        with pytest.raises(ValidationError, match="is not service=database"):
            store(POSTGRES_DBNAME=malformed)
    with pytest.raises(ValidationError, match="bookings twice"):
        store(POSTGRES_DBNAME="bookings=a,bookings=b")
    with pytest.raises(ValueError, match="longer than PostgreSQL's 63 bytes"):
        store(POSTGRES_DBNAME="x" * 60).postgres_database("accounts")  # cut short, two would be one


def test_the_operator_tool_refuses_a_mapping_without_the_service():
    env = {"STORE": "postgres", "POSTGRES_DBNAME": "accounts=a", "SESSION_PUBLIC_KEY_FILE": "/k.pem"}
    with pytest.raises(
        OpsError, match="bookings: POSTGRES_DBNAME='accounts=a' names the databases of accounts"
    ):
        Deployment(common=env).settings("bookings", BookingsSettings)
    env["POSTGRES_DBNAME"] = "accounts=a,bookings=b"
    assert (
        Deployment(common=env).settings("bookings", BookingsSettings).postgres_dbname
        == "accounts=a,bookings=b"
    )
