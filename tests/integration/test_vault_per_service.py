"""The vault is per service, whatever the settings: two services configured onto one database
keep separate keys and secrets. And a vault of the first shape (keyed by subject or name alone,
shared by every service on the database) is migrated once, on start, with everything it sealed
still opening, in the vault and in a service's event store. On SQLite files and on a real
PostgreSQL."""

from __future__ import annotations

import os
import threading
import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr

from backbone import personal
from backbone.blindindex import BlindIndex
from backbone.eventstore import store_env
from backbone.personal import Personal, UnknownSubject, Vault, encrypt
from backbone.settings import StoreSettings
from contracts.personal import Sealed
from services.bookings.application import Bookings
from services.bookings.customers import CustomerAccount

pytestmark = pytest.mark.integration


def rows(url: str, statement: str) -> list[tuple]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(statement)]
    finally:
        engine.dispose()


def test_two_services_on_one_database_keep_separate_keys(database, request):
    if "postgres" in request.node.name:  # put there by the settings, as a deployment would
        url = sa.engine.make_url(database)
        store = StoreSettings(
            kind="postgres",
            postgres_host=url.host,
            postgres_port=url.port,
            postgres_user=url.username,
            postgres_password=SecretStr(url.password),
            postgres_dbname=f"accounts={url.database},bookings={url.database}",
        )
        assert store.vault_url("accounts") == store.vault_url("bookings")
        database = store.vault_url("accounts")
    accounts, bookings = Vault(database, "accounts"), Vault(database, "bookings")
    try:
        subject, other = uuid.uuid4(), uuid.uuid4()
        sealed = accounts.seal(subject, "ada@example.com")
        sealed_other = accounts.seal(other, "Grace")
        with pytest.raises(UnknownSubject):  # never the other service's row
            bookings.open(sealed)
        assert bookings.unpublished() == []  # nor its keys to publish
        records = accounts.unpublished()
        bookings.accept_all(records)  # the copies the keys topic brings
        assert bookings.open(sealed).value == "ada@example.com"

        bookings.erase(subject)  # erased here: the accounts service's key stays
        assert bookings.open(sealed).erased
        assert accounts.sync_erasures() == []
        again = Vault(database, "accounts")  # nothing cached: read from the table
        assert again.open(sealed).value == "ada@example.com"
        again.close()

        accounts.erase(other)  # and the other way round, until the erasure is published
        assert accounts.open(sealed_other).erased
        assert bookings.sync_erasures() == []
        assert Vault(database, "bookings").open(sealed_other).value == "Grace"

        assert accounts.secret("email-index") != bookings.secret("email-index")
        tenant = "tenant-1"
        assert BlindIndex(accounts).exact(tenant, "ada@example.com") != BlindIndex(bookings).exact(
            tenant, "ada@example.com"
        )
        keys = rows(database, "SELECT service, subject_id, key IS NULL FROM subject_keys ORDER BY 1, 2")
        assert sorted(keys) == sorted(
            [
                ("accounts", str(subject), False),
                ("accounts", str(other), True),
                ("bookings", str(subject), True),
                ("bookings", str(other), False),
            ]
        )
    finally:
        accounts.close()
        bookings.close()


# ------------------------------------------------------------ the first shape, migrated

legacy = sa.MetaData()  # the vault's tables as they were before the service was in their keys
sa.Table(
    "subject_keys",
    legacy,
    sa.Column("subject_id", sa.String(36), primary_key=True),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("key", sa.LargeBinary, nullable=True),
    sa.Column("erased_at", personal.UtcDateTime, nullable=True, index=True),
    sa.Column("published", sa.Boolean, nullable=False, default=False),
)
sa.Table(
    "service_secrets",
    legacy,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.LargeBinary, nullable=False),
)


def write_legacy_vault(url: str) -> dict:
    """A vault of the first shape with rows as that code wrote them: an own subject (published),
    an erased one (its erasure not published yet), a copy of another service's key, and two
    secrets; with values sealed under those keys."""
    own, erased, copied = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    own_key, copied_key = AESGCM.generate_key(bit_length=256), AESGCM.generate_key(bit_length=256)
    secrets = {"email-index": os.urandom(32), "blind-index:" + "0" * 48: os.urandom(32)}
    engine = sa.create_engine(url)
    legacy.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            legacy.tables["subject_keys"].insert(),
            [
                {"subject_id": str(own), "owner": "accounts", "key": own_key, "published": True},
                {
                    "subject_id": str(erased),
                    "owner": "accounts",
                    "key": None,
                    "erased_at": datetime.now(UTC),
                    "published": False,
                },
                {"subject_id": str(copied), "owner": "bookings", "key": copied_key, "published": True},
            ],
        )
        conn.execute(
            legacy.tables["service_secrets"].insert(), [{"name": n, "value": v} for n, v in secrets.items()]
        )
    engine.dispose()
    return {
        "own": Sealed(subject_id=own, ciphertext=encrypt(own_key, own, "ada@example.com")),
        "erased": Sealed(subject_id=erased, ciphertext=encrypt(AESGCM.generate_key(256), erased, "x")),
        "copied": Sealed(subject_id=copied, ciphertext=encrypt(copied_key, copied, "Grace Hopper")),
        "secrets": secrets,
    }


def assert_vault_opens(vault: Vault, old: dict) -> None:
    assert vault.open(old["own"]).value == "ada@example.com"
    assert vault.open(old["erased"]).erased
    assert vault.open(old["copied"]).value == "Grace Hopper"
    for name, value in old["secrets"].items():
        assert vault.secret(name) == value  # blind indexes and address ids still match
    [pending] = vault.unpublished()  # the erasure is still to be published, and only it
    assert pending.subject_id == old["erased"].subject_id and pending.key is None


def test_a_vault_of_the_first_shape_is_migrated_once_and_still_opens(database):
    old = write_legacy_vault(database)
    vault = Vault(database, "accounts")  # the new code starts
    try:
        assert_vault_opens(vault, old)
    finally:
        vault.close()
    migrated = rows(database, "SELECT service, subject_id, owner, published FROM subject_keys")
    assert len(migrated) == 3 and {r[0] for r in migrated} == {"accounts"}
    assert len(rows(database, "SELECT * FROM service_secrets WHERE service = 'accounts'")) == 2

    again = Vault(database, "accounts")  # a second start: nothing to do, nothing doubled
    try:
        assert_vault_opens(again, old)
    finally:
        again.close()
    assert sorted(rows(database, "SELECT service, subject_id, owner, published FROM subject_keys")) == sorted(
        migrated
    )
    tables = set(sa.inspect(sa.create_engine(database)).get_table_names())
    assert tables == {"subject_keys", "service_secrets"}  # nothing left aside


def test_instances_starting_together_migrate_once(database):
    old = write_legacy_vault(database)
    vaults, errors = [], []

    def start() -> None:
        try:
            vaults.append(Vault(database, "accounts"))
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        for vault in vaults:
            assert_vault_opens(vault, old)
    finally:
        for vault in vaults:
            vault.close()
    assert len(rows(database, "SELECT * FROM subject_keys")) == 3
    assert len(rows(database, "SELECT * FROM service_secrets")) == 2


def test_a_migration_that_fails_leaves_the_first_shape_as_it_was(database, monkeypatch):
    old = write_legacy_vault(database)
    before = sorted(rows(database, "SELECT subject_id, owner, key, published FROM subject_keys"))

    def fail(*args, **kwargs):
        raise RuntimeError("the machine stops here")

    monkeypatch.setattr(personal.metadata, "create_all", fail)  # after the old tables moved aside
    with pytest.raises(RuntimeError, match="stops here"):
        Vault(database, "accounts")
    assert sorted(rows(database, "SELECT subject_id, owner, key, published FROM subject_keys")) == before
    assert personal._legacy_tables(sa.create_engine(database)) == ["subject_keys", "service_secrets"]
    monkeypatch.undo()
    vault = Vault(database, "accounts")
    try:
        assert_vault_opens(vault, old)
    finally:
        vault.close()


@pytest.mark.postgres
def test_a_shared_vault_of_the_first_shape_goes_to_each_service_that_may_hold_it(postgres):
    """The bug this shape had: `POSTGRES_DBNAME=booking` put the three services in one database
    and one vault table. A subject's key goes to its owner and to the services that consume the
    owner's keys topic (whom its erasures reach), and to no other: nobody consumes the notifier's
    keys, so only the notifier keeps its subjects' keys. Erasing then stays in one service."""
    name = f"vault_{uuid.uuid4().hex[:10]}"
    postgres.create_database(name)
    url = postgres.sqlalchemy_url(name)
    try:
        old = write_legacy_vault(url)
        staff, staff_key = uuid.uuid4(), AESGCM.generate_key(bit_length=256)
        with postgres.connect(name) as conn:
            conn.execute(
                "INSERT INTO subject_keys (subject_id, owner, key, published) "
                "VALUES (%s, 'notifier', %s, false)",
                (str(staff), staff_key),
            )
            for service in ("accounts", "bookings", "notifier"):  # their event stores (eventsourcing's names)
                conn.execute(f"CREATE TABLE {service}_events (notification_id bigint)")
                conn.execute(f"CREATE TABLE {service}_tracking (application_name text)")
            conn.execute("CREATE TABLE session_events (x int)")  # not an event store: no tracking table
        sealed_staff = Sealed(subject_id=staff, ciphertext=encrypt(staff_key, staff, "staff@example.com"))
        bookings = Vault(url, "bookings")  # whichever starts first migrates for all
        accounts, notifier = Vault(url, "accounts"), Vault(url, "notifier")
        try:
            by_service = rows(url, "SELECT service, count(*) FROM subject_keys GROUP BY service ORDER BY 1")
            assert by_service == [("accounts", 3), ("bookings", 3), ("notifier", 4)]
            for vault in (accounts, bookings, notifier):
                assert vault.open(old["own"]).value == "ada@example.com"
                assert vault.open(old["copied"]).value == "Grace Hopper"
                assert vault.secret("email-index") == old["secrets"]["email-index"]
            assert notifier.open(sealed_staff).value == "staff@example.com"
            for vault in (accounts, bookings):  # a copy no erasure of the notifier would reach
                with pytest.raises(UnknownSubject):
                    vault.open(sealed_staff)
            assert_vault_opens(accounts, old)
            accounts.erase(old["own"].subject_id)
            assert Vault(url, "bookings").open(old["own"]).value == "ada@example.com"
        finally:
            for vault in (accounts, bookings, notifier):
                vault.close()
    finally:
        postgres.drop_database(name)


# ------------------------------------------------------ a service started on the first shape


@pytest.fixture(params=["sqlite", "postgres"])
def bookings_store(request, tmp_path):
    if request.param == "sqlite":
        yield StoreSettings(kind="sqlite", data_dir=tmp_path)
        return
    postgres = request.getfixturevalue("postgres")
    prefix = f"firstshape_{uuid.uuid4().hex[:8]}"  # POSTGRES_DBNAME: <prefix>_bookings
    postgres.create_database(f"{prefix}_bookings")
    try:
        yield StoreSettings(
            kind="postgres",
            postgres_host=postgres.host,
            postgres_port=postgres.port,
            postgres_user=postgres.user,
            postgres_password=SecretStr(postgres.password),
            postgres_dbname=prefix,
        )
    finally:
        postgres.drop_database(f"{prefix}_bookings")


def bookings_app(store: StoreSettings) -> Bookings:
    return Bookings(env=store_env(store, "bookings"), vault=Vault(store.vault_url("bookings"), "bookings"))


def to_first_shape(url: str) -> int:
    """The vault's rows put back into the tables of the first shape (as that code kept them)."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        keys = [dict(r._mapping) for r in conn.execute(sa.select(personal.subject_keys))]
        secrets = [dict(r._mapping) for r in conn.execute(sa.select(personal.service_secrets))]
        personal.metadata.drop_all(conn)
        legacy.create_all(conn)
        for table, found in (("subject_keys", keys), ("service_secrets", secrets)):
            for row in found:
                row.pop("service")
            if found:
                conn.execute(legacy.tables[table].insert(), found)
    engine.dispose()
    return len(keys)


def test_a_service_started_on_a_vault_of_the_first_shape_reads_what_it_stored(bookings_store):
    app = bookings_app(bookings_store)
    account_id = uuid.uuid4()
    account = CustomerAccount(
        account_id=account_id, tenant_id="acme", email=Personal(account_id, "ada@example.com")
    )
    app.save(account)
    token = BlindIndex(app.vault).exact("acme", "ada@example.com")
    app.close()
    assert to_first_shape(bookings_store.vault_url("bookings")) == 1

    for _start in range(2):  # the first start migrates, the second finds nothing to do
        app = bookings_app(bookings_store)
        try:
            assert app.repository.get(account.id).email.value == "ada@example.com"
            assert BlindIndex(app.vault).exact("acme", "ada@example.com") == token  # lookups still match
        finally:
            app.close()
        url = bookings_store.vault_url("bookings")
        assert rows(url, "SELECT service, subject_id FROM subject_keys") == [("bookings", str(account_id))]
        assert [r[0] for r in rows(url, "SELECT service FROM service_secrets")] == ["bookings"]


UNPUBLISHED = "ix_subject_keys_unpublished"


def indexes(engine: sa.Engine) -> set[str]:
    return {index["name"] for index in sa.inspect(engine).get_indexes("subject_keys")}


def test_a_vault_made_before_the_unpublished_index_gets_it_on_start_and_the_relay_reads_through_it(
    database,
):
    """The relay asks for unpublished keys before every batch: without the partial index the
    query walked every subject of the vault (41 ms a call at 50,000 keys, 0.15 ms with it)."""
    vault = Vault(database, "bookings")
    published, fresh = uuid.uuid4(), uuid.uuid4()
    vault.create_keys([published])
    vault.mark_published(vault.unpublished())
    vault.engine.dispose()
    engine = sa.create_engine(database)
    with engine.begin() as conn:  # the vault as an older release left it
        conn.exec_driver_sql(f"DROP INDEX {UNPUBLISHED}")
    assert UNPUBLISHED not in indexes(engine)

    vault = Vault(database, "bookings")  # the next start
    assert UNPUBLISHED in indexes(engine)
    vault.create_keys([fresh])
    assert [k.subject_id for k in vault.unpublished()] == [fresh]
    if engine.dialect.name == "sqlite":
        query = (
            "SELECT * FROM subject_keys WHERE service = 'bookings' AND owner = 'bookings'"
            " AND published IS 0 ORDER BY subject_id LIMIT 500"
        )
        plan = " ".join(str(row[-1]) for row in rows(database, "EXPLAIN QUERY PLAN " + query))
        assert UNPUBLISHED in plan
    Vault(database, "bookings").engine.dispose()  # a start that finds it there changes nothing
    vault.engine.dispose()
    engine.dispose()
