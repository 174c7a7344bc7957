"""Benchmark of the operator tooling: events/s for rebuild, republish, replay and export, on
SQLite and on PostgreSQL. Prints figures; asserts nothing about speed.

    python -m benchmarks.ops                        # 1,000,000 events, SQLite then PostgreSQL
    python -m benchmarks.ops --events 100000 --stores sqlite

For each store it writes N events into a bookings event store through the service's own save
path (bookings placed and cancelled, in batches), then measures, with the same code the
`booking-accounts` commands run:

* rebuild:   the bookings read model into a shadow, switched in (`ops.rebuild`);
* export:    the whole log as a hash-chained JSON Lines file (`backbone.auditexport`), and verify;
* republish: the whole log to Kafka through the relay's translation (`ops.republish`);
* replay:    those messages through a fresh notifier's inbox, exactly once (`ops.replay`): every
             cancellation queues an email, every placement is read and has no effect there.

PostgreSQL and Kafka are the local throw-away servers of `deploy.local` unless POSTGRES_HOST
or KAFKA_BOOTSTRAP_SERVERS point elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from backbone import bus, context
from backbone.audit import AuditLog
from backbone.auditexport import Export, verify
from backbone.credentials import load_or_create_sealing_keys, load_or_create_signing_key, public_path
from backbone.signing import create_key
from backbone.unitofwork import UnitOfWork
from contracts.bookings import PlaceBooking
from deploy.local.kafka import LocalKafka
from deploy.local.postgres import LocalPostgres, PostgresParams
from ops import registry
from ops.config import Deployment
from ops.kafka import Kafka, producer
from ops.rebuild import Rebuild
from ops.replay import replay
from ops.republish import republish
from services.bookings.domainmodel import Booking
from services.bookings.handlers import place_booking

BATCH = 1000  # bookings per save: 2,000 events per transaction


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="events to write (two per booking)")
    parser.add_argument("--bus-events", type=int, help="events to republish and replay (default: all)")
    parser.add_argument("--stores", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    args = parser.parse_args()
    bus_events = min(args.bus_events or args.events, args.events)
    print(
        f"# booking-accounts ops benchmark: {args.events:,} events in the log, {bus_events:,} through "
        f"Kafka; {os.cpu_count()} CPUs; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    with infrastructure("postgres" in args.stores) as (kafka, postgres):
        for store in args.stores.split(","):
            with tempfile.TemporaryDirectory(prefix=f"ops-bench-{store}-") as root:
                run(store, args.events, bus_events, Path(root), kafka, postgres)


@contextlib.contextmanager
def infrastructure(with_postgres: bool) -> Iterator[tuple[str, PostgresParams | None]]:
    with contextlib.ExitStack() as stack:
        kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not kafka:
            broker = LocalKafka()
            stack.callback(broker.close)
            kafka = broker.start()
        postgres = None
        if with_postgres and os.environ.get("POSTGRES_HOST"):
            postgres = PostgresParams(
                os.environ["POSTGRES_HOST"],
                int(os.environ.get("POSTGRES_PORT", "5432")),
                os.environ.get("POSTGRES_USER", "postgres"),
                os.environ.get("POSTGRES_PASSWORD", ""),
            )
        elif with_postgres:
            server = LocalPostgres()
            stack.callback(server.close)
            postgres = server.start()
        yield kafka, postgres


def deployment(store: str, root: Path, kafka: str, postgres: PostgresParams | None) -> Deployment:
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    signing_key = root / "session-signing-key.pem"
    load_or_create_signing_key(signing_key)
    load_or_create_sealing_keys(root / "sealing.key")
    common = {"KAFKA_BOOTSTRAP_SERVERS": kafka, "TOPIC_NAMESPACE": namespace, "STORE": store}
    services = {}
    for name in ("accounts", "bookings", "notifier"):  # as `python -m deploy.keys` makes them
        create_key(root / "bus", name)
    for name in ("bookings", "notifier"):
        env = {
            "DATA_DIR": str(root / name),
            "BUS_KEY_FILE": str(root / "bus" / f"{name}.key"),
            "BUS_TRUSTED_KEYS_DIR": str(root / "bus" / "trusted"),
        }
        if store == "postgres":
            assert postgres is not None
            database = f"{namespace}_{name}"
            postgres.create_database(database)
            env |= {k: v for k, v in postgres.env(namespace).items()}  # POSTGRES_DBNAME: a prefix
        services[name] = env
    services["bookings"]["SESSION_PUBLIC_KEY_FILE"] = str(public_path(signing_key))
    services["notifier"]["SEALING_KEY_FILE"] = str(root / "sealing.key")
    return Deployment(common=common, services=services)


def open_service(name: str, setup: Deployment) -> registry.ServiceHandle:
    """A service built by its own composition root, which creates its store when there is none
    (the operator tool's `registry.build` refuses to: this is setup)."""
    settings = setup.settings(name, registry.settings_class(name))
    bootstrap = registry.entry(name).bootstrap
    module, _, function = bootstrap.partition(":")
    return registry.ServiceHandle(name, getattr(importlib.import_module(module), function)(settings))


def run(
    store: str, events: int, bus_events: int, root: Path, kafka: str, postgres: PostgresParams | None
) -> None:
    setup = deployment(store, root, kafka, postgres)
    bookings = open_service("bookings", setup)
    notifier = open_service("notifier", setup)
    try:
        for handle in (bookings, notifier):  # as the services create them when they start
            service = handle.service
            asyncio.run(
                bus.ensure_topics(
                    kafka,
                    service.topics + service.compacted_topics,
                    handle.settings.topic_partitions,
                    compacted=tuple(service.compacted_topics),
                )
            )
        timed(store, "write (setup: the service's save path)", lambda: write(bookings, events))
        [(read_model, projections)] = bookings.read_models
        rebuild = Rebuild(bookings.app, read_model, projections)
        timed(store, "rebuild (shadow + switch)", lambda: rebuild.run().applied)
        export_file = root / "export.jsonl"

        def export() -> int:
            job = Export(AuditLog(bookings.app), "bookings")
            with export_file.open("w") as out:
                out.writelines(job.lines())
            return job.records

        timed(store, "export (hash-chained JSON Lines)", export)
        with export_file.open() as lines:
            timed(store, "verify (the export)", lambda: verify(lines).records)
        timed(store, "republish (relay translation + Kafka)", lambda: asyncio.run(send(bookings, bus_events)))
        for consumer in notifier.consumers:  # the subject keys first, then the inbox
            timed(
                store,
                f"replay ({consumer.name.rsplit('.', 1)[-1]})",
                lambda c=consumer: asyncio.run(consume(c, kafka)),
            )
    finally:
        bookings.close()
        notifier.close()


def timed(store: str, what: str, work: Callable[[], int]) -> None:
    """Run `work`, which returns how many events (or messages) it handled, and print the rate."""
    started = time.perf_counter()
    count = work()
    seconds = time.perf_counter() - started
    print(
        f"{store:<9} {what:<40} {count:>10,} in {seconds:8.1f} s = {count / seconds:>9,.0f} /s",
        flush=True,
    )


def write(handle: registry.ServiceHandle, events: int) -> int:
    """Bookings placed by the service's own command handler, then cancelled: two events each,
    saved a batch at a time. Their subjects' keys are made in bulk first (one vault transaction
    per batch rather than one per booking: this is setup, not what is measured)."""
    starts = datetime.now(UTC) + timedelta(days=30)
    for first in range(0, events // 2, BATCH):
        ids = [uuid.uuid4() for _ in range(first, min(first + BATCH, events // 2))]
        handle.app.vault.create_keys(ids)  # one transaction per chunk
        uow = UnitOfWork(handle.app)
        for n, booking_id in enumerate(ids, start=first):
            command = PlaceBooking.model_validate(
                {
                    "command_id": str(uuid.uuid4()),
                    "issued_at": datetime.now(UTC).isoformat(),
                    "issued_by": "benchmark",
                    "tenant_id": "bench",
                    "correlation_id": str(uuid.uuid4()),
                    "booking_id": str(booking_id),
                    "booking_code": f"B-{n}",
                    "customer": {"email": f"guest-{n}@example.com", "name": f"Guest {n}"},
                    "lines": [
                        {
                            "kind": "item",
                            "ref": "kayak",
                            "name": "Kayak",
                            "starts_at": starts.isoformat(),
                            "ends_at": (starts + timedelta(hours=2)).isoformat(),
                            "unit_price": "40.00",
                        }
                    ],
                    "currency": "EUR",
                    "status": "PAID",
                    "amount_paid": "40.00",
                }
            )
            with context.caused_by("service:benchmark", "bench", command.correlation_id, command.command_id):
                booking = uow.get(Booking, place_booking(command, uow).aggregate_id)
                booking.record_cancellation(
                    status_before="PAID",
                    refund_due=Decimal("40.00"),
                    reason=None,
                    cancelled_at=datetime.now(UTC),
                )
        handle.app.save(*uow.changed())
    return events // 2 * 2


async def send(handle: registry.ServiceHandle, events: int) -> int:
    async with producer(handle.kafka) as broker:
        report = await republish(handle, broker, to_position=events, keys=True, batch_size=2000)
    return report.events


async def consume(consumer: Any, servers: str) -> int:
    async with Kafka(servers, max_records=2000) as kafka, producer(servers) as broker:
        report = await replay(consumer, kafka, broker, from_offset=0)
    assert report.dead_lettered == 0 and report.applied + report.redelivered == report.read
    return report.read


if __name__ == "__main__":
    main()
