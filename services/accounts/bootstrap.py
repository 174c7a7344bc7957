"""The composition root of the accounts service: everything is wired here and only here."""

from __future__ import annotations

from backbone import bus
from backbone.auth import admin, customer_session, staff_member
from backbone.credentials import SessionSigner, SessionVerifier, load_signing_key
from backbone.eventstore import store_env
from backbone.http import create_api
from backbone.inbox import Inbox
from backbone.outbox import OutboxRelay
from backbone.personal import Vault
from backbone.readmodel import SERVING_PAGE_CACHE_MIB, Projection, ReadModel
from backbone.runtime import Service, attach
from backbone.subjectkeys import SubjectKeyReceiver
from contracts.catalog import ALL_EVENTS, Catalog
from contracts.personal import subject_keys_topic
from contracts.topics import ACCOUNTS_EVENTS, BOOKINGS_EVENTS, dead_letters
from services.accounts import api, views
from services.accounts.application import Accounts, AccountsConfig
from services.accounts.deferred import Deferred
from services.accounts.erasure import Eraser
from services.accounts.handlers import HANDLERS
from services.accounts.integration import SERVICE, translator
from services.accounts.ratelimits import RateLimits
from services.accounts.settings import AccountsSettings
from services.accounts.views import StaffQueries


def bootstrap(settings: AccountsSettings | None = None) -> Service:
    settings = settings or AccountsSettings()
    store = settings.store_settings()
    bus_keys = settings.bus_keys(SERVICE)  # before anything else: no start without them
    vault = Vault(store.vault_url(SERVICE), SERVICE)
    accounts = Accounts(
        AccountsConfig(
            public_base_url=settings.public_base_url,
            notifier_public_key=settings.notifier_key(),
            verification_ttl=settings.verification_ttl,
            invitation_ttl=settings.invitation_ttl,
            magic_link_ttl=settings.magic_link_ttl,
            password_reset_ttl=settings.password_reset_ttl,
        ),
        env=store_env(store, SERVICE),
        vault=vault,
    )
    read_model = ReadModel(store.views_url(SERVICE), views.metadata, page_cache_mib=SERVING_PAGE_CACHE_MIB)
    signing_key = load_signing_key(settings.signing_key_path())
    broker = bus.make_broker(
        settings.kafka_bootstrap_servers, client_id=SERVICE, security=settings.kafka_security()
    )
    # Bookings' events bring customer details to merge into profiles (handlers.py), sealed
    # with the bookings' subject keys: those arrive on bookings' keys topic.
    inbox = Inbox(
        service=SERVICE,
        name=settings.topic(f"{SERVICE}.inbox"),
        app=accounts,
        broker=broker,
        topics=[settings.topic(BOOKINGS_EVENTS)],
        catalog=Catalog(ALL_EVENTS),
        handlers=HANDLERS,
        dead_letter_topic=settings.topic(dead_letters(SERVICE)),
        batch_size=settings.consumer_batch_size,
        verifier=bus_keys.verifier,
        key_patience_seconds=settings.subject_key_patience_seconds,
    )
    keys = SubjectKeyReceiver(
        name=settings.topic(f"{SERVICE}.subject-keys"),
        vault=vault,
        broker=broker,
        topics=[settings.topic(subject_keys_topic("bookings"))],
        dead_letter_topic=settings.topic(dead_letters(SERVICE)),
        verifier=bus_keys.verifier,
        signer=bus_keys.signer,
    )
    deferred = Deferred(
        settings.deferred_capacity, settings.deferred_per_client, probe=accounts.unreachable_stores
    )
    http = create_api(
        title="booking-accounts: accounts",
        version="1.0.0",
        description="Customer accounts: claim, email verification, login (password or emailed link), "
        "profile; the tenant's settings; the staff directory; erasure.",
    )
    # What the routes are given (services.accounts.api.auth): the one place they are made.
    signer = SessionSigner(signing_key, lifetime=settings.session_ttl)
    http.state.accounts, http.state.signer, http.state.deferred = accounts, signer, deferred
    http.state.limits = RateLimits(
        accounts.index.pseudonym, settings.rate_limits, settings.rate_limit_storage
    )
    http.state.staff_queries = StaffQueries(read_model, accounts.vault)
    http.state.customer_session = customer_session(SessionVerifier(signing_key.public_key()))
    http.state.staff_member = staff_member(accounts.staff_member)
    http.state.admin = admin(settings.admin_api_token)
    api.install(http)
    return attach(
        Service(
            name=SERVICE,
            settings=settings,
            app=accounts,
            broker=broker,
            api=http,
            topics=[settings.topic(t) for t in (ACCOUNTS_EVENTS, BOOKINGS_EVENTS, dead_letters(SERVICE))],
            compacted_topics=[settings.topic(subject_keys_topic(s)) for s in (SERVICE, "bookings")],
            read_model=read_model,
            followers=[
                OutboxRelay(
                    accounts,
                    broker,
                    SERVICE,
                    translator(accounts),
                    settings.relay_batch_size,
                    topic_for=settings.topic,
                    signer=bus_keys.signer,
                    keyring=bus_keys.keyring,
                ),
                Projection(
                    accounts, read_model, f"{SERVICE}.views", views.projector(vault), erases=views.erases
                ),
                Eraser(accounts, settings.relay_batch_size),
            ],
            consumers=[inbox, keys],
            workers=[deferred.run],
        )
    )
