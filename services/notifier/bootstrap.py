"""The composition root of the notifier service."""

from __future__ import annotations

from backbone import bus
from backbone.auth import staff_member
from backbone.credentials import load_sealing_keys
from backbone.eventstore import store_env
from backbone.http import create_api
from backbone.inbox import Inbox
from backbone.personal import Vault
from backbone.readmodel import SERVING_PAGE_CACHE_MIB, Projection, ReadModel
from backbone.runtime import Service, attach
from backbone.subjectkeys import SubjectKeyReceiver
from contracts.catalog import ALL_EVENTS, Catalog
from contracts.personal import subject_keys_topic
from contracts.topics import ACCOUNTS_EVENTS, BOOKINGS_EVENTS, dead_letters
from services.notifier import api, views
from services.notifier.application import Notifier
from services.notifier.erasure import Eraser
from services.notifier.handlers import HANDLERS, prefetch
from services.notifier.rendering import Renderer
from services.notifier.sender import Sender
from services.notifier.settings import NotifierSettings
from services.notifier.smtp import Mailer

SERVICE = "notifier"


def bootstrap(settings: NotifierSettings | None = None) -> Service:
    settings = settings or NotifierSettings()
    store = settings.store_settings()
    bus_keys = settings.bus_keys(SERVICE)  # before anything else: no start without them
    vault = Vault(store.vault_url(SERVICE), SERVICE)
    renderer = Renderer(settings.mail_from)
    notifier = Notifier(
        env=store_env(store, SERVICE),
        vault=vault,
        policy=settings.delivery_policy(),
        default_language=settings.default_language,
        default_business_name=renderer.default_name,
        portal_url=settings.portal_url,
    )
    read_model = ReadModel(store.views_url(SERVICE), views.metadata, page_cache_mib=SERVING_PAGE_CACHE_MIB)
    projection = Projection(notifier, read_model, f"{SERVICE}.views", views.projector(vault))
    eraser = Eraser(notifier, read_model)
    private_key, _ = load_sealing_keys(settings.sealing_key_path())
    broker = bus.make_broker(
        settings.kafka_bootstrap_servers, client_id=SERVICE, security=settings.kafka_security()
    )
    inbox = Inbox(
        service=SERVICE,
        name=settings.topic(f"{SERVICE}.inbox"),
        app=notifier,
        broker=broker,
        topics=[settings.topic(ACCOUNTS_EVENTS), settings.topic(BOOKINGS_EVENTS)],
        catalog=Catalog(ALL_EVENTS),
        handlers=HANDLERS,
        prefetch=prefetch,
        dead_letter_topic=settings.topic(dead_letters(SERVICE)),
        batch_size=settings.consumer_batch_size,
        verifier=bus_keys.verifier,
        key_patience_seconds=settings.subject_key_patience_seconds,
    )
    keys = SubjectKeyReceiver(
        name=settings.topic(f"{SERVICE}.subject-keys"),
        vault=vault,
        broker=broker,
        topics=[settings.topic(subject_keys_topic(s)) for s in ("accounts", "bookings")],
        dead_letter_topic=settings.topic(dead_letters(SERVICE)),
        verifier=bus_keys.verifier,
        signer=bus_keys.signer,
        on_erased=eraser.subjects_erased,
    )
    sender = Sender(
        notifier,
        read_model,
        projection,
        Mailer(settings),
        renderer,
        private_key,
        batch_size=settings.send_batch_size,
        connections=settings.smtp_connections,
        count_every=settings.lag_interval_seconds,
    )
    http = create_api(
        title="booking-accounts: notifier",
        version="1.0.0",
        description="Emails to customers and staff, each sent exactly once; the delivery log.",
    )
    # What the routes are given (Annotated dependencies in api.py). Staff members use the API
    # keys that accounts issued; accounts announces them (their hashes) on its topic, the inbox
    # keeps them (StaffKey).
    http.state.notifier = notifier
    http.state.staff_queries = views.StaffQueries(read_model, vault)
    http.state.staff_member = staff_member(notifier.staff_key)
    api.REFUSALS.install(http)
    for router in api.ROUTERS:
        http.include_router(router)
    return attach(
        Service(
            name=SERVICE,
            settings=settings,
            app=notifier,
            broker=broker,
            api=http,
            topics=[settings.topic(t) for t in (ACCOUNTS_EVENTS, BOOKINGS_EVENTS, dead_letters(SERVICE))],
            compacted_topics=[settings.topic(subject_keys_topic(s)) for s in ("accounts", "bookings")],
            read_model=read_model,
            followers=[projection, eraser],
            consumers=[inbox, keys],
            workers=[sender.run, sender.watch_queue],
        )
    )
