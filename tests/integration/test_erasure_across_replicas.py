"""Erasure across replicas: two instances of the accounts service on one PostgreSQL database.

Each instance keeps subject keys and decrypted aggregates in memory. After one of them
redacts an account, the other stops decrypting that customer within seconds: its vault finds
the erasure in the shared table and forgets the key, and its aggregate cache starts afresh.
"""

from __future__ import annotations

import time
import uuid

import pytest
from pydantic import SecretStr

from backbone.credentials import load_or_create_sealing_keys
from backbone.eventstore import store_env
from backbone.personal import ERASURE_SYNC_SECONDS, Personal, Vault
from backbone.settings import StoreSettings
from services.accounts.application import Accounts, AccountsConfig

pytestmark = pytest.mark.integration


@pytest.fixture
def replicas(postgres, tmp_path):
    prefix = f"replicas_{uuid.uuid4().hex[:8]}"  # POSTGRES_DBNAME: <prefix>_accounts
    database = f"{prefix}_accounts"
    postgres.create_database(database)
    store = StoreSettings(
        kind="postgres",
        postgres_host=postgres.host,
        postgres_port=postgres.port,
        postgres_user=postgres.user,
        postgres_password=SecretStr(postgres.password),
        postgres_dbname=prefix,
    )
    _, public = load_or_create_sealing_keys(tmp_path / "sealing.key")
    apps = [
        Accounts(
            AccountsConfig("https://accounts.example.test", public),
            env=store_env(store, "accounts"),
            vault=Vault(store.vault_url("accounts"), "accounts"),
        )
        for _ in range(2)
    ]
    apps[0].change_settings("acme", {"customer_logins_enabled": True})
    yield apps
    for app in apps:
        app.close()
    postgres.drop_database(database)


def test_after_a_redaction_every_replica_stops_decrypting_within_seconds(replicas):
    first, second = replicas
    first.claim_account("acme", "wes@example.com", "Wes", "en")
    account = first.account_by_email("acme", "wes@example.com")
    sealed = first.sealed(account.email)
    # The other replica has read the account: the key and the aggregate are in its memory.
    assert second.account(account.id).email == Personal(account.id, "wes@example.com")
    assert str(second.vault.open(sealed)) == "wes@example.com"

    first.redact("acme", account.id)

    deadline = time.monotonic() + 10 * ERASURE_SYNC_SECONDS
    while str(second.vault.open(sealed)) != "[erased]":
        assert time.monotonic() < deadline, "the other replica still decrypts the erased subject"
        time.sleep(0.1)
    assert second.account(account.id).email == Personal(account.id, None)  # its cache too
    assert second.vault.is_erased(account.id)
