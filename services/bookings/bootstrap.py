"""The composition root of the bookings service."""

from __future__ import annotations

from backbone import bus
from backbone.auth import admin, customer_session, staff_member
from backbone.credentials import SessionVerifier, load_verify_key
from backbone.eventstore import store_env
from backbone.http import create_api
from backbone.inbox import Inbox
from backbone.outbox import OutboxRelay
from backbone.personal import Vault
from backbone.readmodel import SERVING_PAGE_CACHE_MIB, ReadModel
from backbone.runtime import Service, attach
from backbone.subjectkeys import SubjectKeyReceiver
from contracts.catalog import ALL_COMMANDS, ALL_EVENTS, Catalog
from contracts.personal import subject_keys_topic
from contracts.topics import (
    ACCOUNTS_EVENTS,
    BOOKINGS_COMMAND_OUTCOMES,
    BOOKINGS_COMMANDS,
    BOOKINGS_EVENTS,
    dead_letters,
)
from services.bookings import admin as admin_api
from services.bookings import api, api_staff, publishers, staffkeys, views
from services.bookings.api_errors import REFUSALS
from services.bookings.application import Bookings
from services.bookings.erasure import Eraser
from services.bookings.handlers import HANDLERS, prefetch
from services.bookings.integration import SERVICE, declare_publications, translator
from services.bookings.reads import CustomerReads, ReadCache, StaffReads
from services.bookings.settings import BookingsSettings


def bootstrap(settings: BookingsSettings | None = None) -> Service:
    settings = settings or BookingsSettings()
    store = settings.store_settings()
    # Before anything else: no start without the keys.
    bus_keys = settings.bus_keys(SERVICE, accept_unsigned_commands=settings.accept_unsigned_commands)
    vault = Vault(store.vault_url(SERVICE), SERVICE)
    bookings = Bookings(env=store_env(store, SERVICE), vault=vault)
    # Events are believed from their owners, commands from the publishers registered here.
    bus_keys.verifier.lookup = publishers.lookup(bookings)
    read_model = ReadModel(store.views_url(SERVICE), views.metadata, page_cache_mib=SERVING_PAGE_CACHE_MIB)
    reads = CustomerReads(read_model, bookings.clock, ReadCache(), vault=vault)
    projection = reads.projection(bookings, f"{SERVICE}.views", erases=views.erases)
    broker = bus.make_broker(
        settings.kafka_bootstrap_servers, client_id=SERVICE, security=settings.kafka_security()
    )
    inbox = Inbox(
        service=SERVICE,
        name=settings.topic(f"{SERVICE}.inbox"),
        app=bookings,
        broker=broker,
        topics=[settings.topic(BOOKINGS_COMMANDS), settings.topic(ACCOUNTS_EVENTS)],
        catalog=Catalog((*ALL_COMMANDS, *ALL_EVENTS)),
        handlers={**HANDLERS, **staffkeys.HANDLERS},
        dead_letter_topic=settings.topic(dead_letters(SERVICE)),
        batch_size=settings.consumer_batch_size,
        prefetch=prefetch,
        verifier=bus_keys.verifier,
        authorize=publishers.authorize,
        key_patience_seconds=settings.subject_key_patience_seconds,
    )
    declare_publications(broker, settings.topic)
    keys = SubjectKeyReceiver(
        name=settings.topic(f"{SERVICE}.subject-keys"),
        vault=vault,
        broker=broker,
        topics=[settings.topic(subject_keys_topic("accounts"))],
        dead_letter_topic=settings.topic(dead_letters(SERVICE)),
        verifier=bus_keys.verifier,
        signer=bus_keys.signer,
    )
    http = create_api(
        title="booking-accounts: bookings",
        version="1.0.0",
        description="Bookings: the customer's history, and self-service cancelling and "
        "modifying within the business's rules. Other services place and change bookings with "
        "commands on the `bookings.commands` topic (docs/publishing-booking-commands.md).",
    )
    # What the routes are given (Annotated dependencies in api.py, api_staff.py, admin.py).
    http.state.bookings, http.state.reads = bookings, reads
    http.state.staff_reads = StaffReads(reads)  # the staff list and search (reads.py)
    sessions = SessionVerifier(load_verify_key(settings.session_public_key_file))
    http.state.customer_session = customer_session(sessions)
    # Staff members use the API keys accounts issued, announced on its topic (staffkeys.py).
    http.state.staff_member = staff_member(bookings.staff_key)
    http.state.admin = admin(settings.admin_api_token)
    REFUSALS.install(http)
    for router in (api.router, admin_api.router, api_staff.router):
        http.include_router(router)
    # The two hot reads answered before routing when they succeed (api.FastReads).
    http.state.shortcuts.add(api.FastReads(reads, sessions))
    return attach(
        Service(
            name=SERVICE,
            settings=settings,
            app=bookings,
            broker=broker,
            api=http,
            topics=[
                settings.topic(t)
                for t in (
                    BOOKINGS_EVENTS,
                    BOOKINGS_COMMANDS,
                    BOOKINGS_COMMAND_OUTCOMES,
                    ACCOUNTS_EVENTS,
                    dead_letters(SERVICE),
                )
            ],
            compacted_topics=[settings.topic(subject_keys_topic(s)) for s in (SERVICE, "accounts")],
            read_model=read_model,
            followers=[
                OutboxRelay(
                    bookings,
                    broker,
                    SERVICE,
                    translator(bookings),
                    settings.relay_batch_size,
                    topic_for=settings.topic,
                    signer=bus_keys.signer,
                    keyring=bus_keys.keyring,
                ),
                projection,
                Eraser(bookings, read_model, projection.name),
            ],
            consumers=[inbox, keys],
            # A standby instance (another leads the projection) keeps its read caches current.
            workers=[projection.keep_caches_current],
        )
    )
