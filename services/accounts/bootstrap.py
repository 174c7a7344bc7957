"""The composition root of the accounts service: everything is wired here and only here."""

from __future__ import annotations

from backbone import bus
from backbone.credentials import (
    SessionSigner,
    SessionVerifier,
    load_or_create_signing_key,
)
from backbone.eventstore import store_env
from backbone.http import create_api
from backbone.outbox import OutboxRelay
from backbone.personal import Vault
from backbone.runtime import Service, attach
from contracts.personal import subject_keys_topic
from contracts.topics import ACCOUNTS_EVENTS, dead_letters
from services.accounts import api
from services.accounts.application import Accounts, AccountsConfig
from services.accounts.integration import SERVICE, translator
from services.accounts.settings import AccountsSettings


def bootstrap(settings: AccountsSettings | None = None) -> Service:
    settings = settings or AccountsSettings()
    store = settings.store_settings()
    accounts = Accounts(
        AccountsConfig(
            public_base_url=settings.public_base_url,
            notifier_public_key=settings.notifier_key(),
            verification_ttl=settings.verification_ttl,
        ),
        env=store_env(store, SERVICE),
        vault=Vault(store.vault_url(SERVICE), SERVICE),
    )
    signing_key = load_or_create_signing_key(settings.signing_key_path())
    broker = bus.make_broker(settings.kafka_bootstrap_servers, client_id=SERVICE)
    http = create_api(
        title="booking-accounts: accounts",
        version="1.0.0",
        description="Customer accounts: claim, email verification, login, tenant settings.",
    )
    api.routes(
        http,
        accounts,
        SessionSigner(signing_key),
        SessionVerifier(signing_key.public_key()),
        settings.staff_api_token,
    )
    relay = OutboxRelay(
        accounts, broker, SERVICE, translator(accounts), settings.relay_batch_size, topic_for=settings.topic
    )
    return attach(
        Service(
            name=SERVICE,
            settings=settings,
            app=accounts,
            broker=broker,
            api=http,
            topics=[settings.topic(t) for t in (ACCOUNTS_EVENTS, dead_letters(SERVICE))],
            compacted_topics=[settings.topic(subject_keys_topic(SERVICE))],
            followers=[relay],
        )
    )
