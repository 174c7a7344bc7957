"""How fast the bookings service applies commands and answers a customer's listing.

    python -m benchmarks.bookings_commands [--bookings 2000] [--batch 500]   # from the repository root

In process, on the service's real store (a SQLite file in a temporary directory, as in
production by default) and its real inbox code path: batches of hand-built Kafka records go
through decoding, the receipts, the handlers and one store transaction per batch, exactly as
consumed records do (the broker's own cost is not in these figures, nor are the signatures:
no verifier). The outbox relay's translation of the events they recorded follows (not
published). Then the read model is built by the projection, and a customer with many bookings
lists them through the HTTP code. Prints rates and CPU time (which a busy machine distorts
less than rates); asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka.structs import ConsumerRecord
from faststream.kafka import KafkaBroker

from backbone.blindindex import BlindIndex
from backbone.eventstore import store_env
from backbone.follower import read_log
from backbone.inbox import Inbox
from backbone.personal import Vault
from backbone.readmodel import Projection, ReadModel
from backbone.settings import StoreSettings
from contracts.catalog import ALL_COMMANDS, ALL_EVENTS, Catalog
from services.bookings import views
from services.bookings.application import Bookings
from services.bookings.handlers import HANDLERS, prefetch
from services.bookings.integration import translator
from tests.support.bookings import pay, place

TENANT = "bench"


def records(bodies: list[dict], start: int) -> list[ConsumerRecord]:
    out = []
    for i, body in enumerate(bodies):
        raw = json.dumps(body).encode()
        out.append(ConsumerRecord("bookings.commands", 0, start + i, 0, 0, b"k", raw, None, 1, len(raw), ()))
    return out


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = StoreSettings(kind="sqlite", data_dir=Path(tmp))
        app = Bookings(env=store_env(store, "bookings"), vault=Vault(store.vault_url("bookings"), "bookings"))
        inbox = Inbox(
            service="bookings",
            name="bookings.inbox",
            app=app,
            broker=KafkaBroker(),
            topics=["bookings.commands"],
            catalog=Catalog((*ALL_COMMANDS, *ALL_EVENTS)),
            handlers=HANDLERS,
            dead_letter_topic="bookings.dead-letters",
            prefetch=prefetch,
        )
        start = datetime.now(UTC) + timedelta(days=30)
        placed = [place(TENANT, f"guest{i % 50}@example.com", starts_at=start) for i in range(args.bookings)]
        payments = [pay(TENANT, body["booking_id"], "30.00") for body in placed]
        offset, relayed, translate = 0, 0, translator(app)
        for label, bodies in (("PlaceBooking", placed), ("RecordPayment", payments)):
            began, cpu = time.perf_counter(), time.process_time()
            for i in range(0, len(bodies), args.batch):
                batch = records(bodies[i : i + args.batch], offset)
                offset += len(batch)
                await inbox.apply(batch)
            seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
            rate = len(bodies) / seconds
            print(
                f"{label:14} {len(bodies):6} commands in {seconds:6.2f} s: {rate:7.0f} commands/s, "
                f"{cpu * 1000 / len(bodies):.2f} ms CPU each"
            )
            # What the outbox relay derives from them (not published: no broker here).
            events, cpu = read_log(app, relayed, 1_000_000), time.process_time()
            for recorded in events:
                list(translate(recorded))
            cpu, relayed = time.process_time() - cpu, events[-1].position
            per_command = cpu * 1000 / len(bodies)
            print(f"{'  relay':14} {len(events):6} events translated: {per_command:.2f} ms CPU per command")

        read_model = ReadModel(store.views_url("bookings"), views.metadata)
        read_model.create()
        projection = Projection(app, read_model, "bookings.views", views.projector(app.vault))
        began, cpu, events = time.perf_counter(), time.process_time(), 0
        while batch := read_log(app, read_model.position("bookings.views"), 1000):
            projection.apply(batch)
            events += len(batch)
        seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
        print(
            f"{'projection':14} {events:6} events   in {seconds:6.2f} s: {events / seconds:7.0f} events/s, "
            f"{cpu * 1_000_000 / events:.0f} µs CPU each"
        )

        # The listing finds a customer's bookings by the blind-index token of their verified
        # email (computed once per request), then opens the sealed contact details of each row
        # (which staff pages show; the customer's own listing does not need them).
        account, index = uuid.uuid4(), BlindIndex(app.vault)
        with read_model.engine.connect() as conn:
            began = time.perf_counter()
            for _ in range(50):
                token = index.exact(TENANT, "guest7@example.com")
                found = views.customer_bookings(conn, TENANT, account, token, with_pre=False)
            per_query = (time.perf_counter() - began) / 50
            # (The listing's summary columns hold nothing personal: the staff pages' full rows do.)
            rows = [views.booking_row(conn, uuid.UUID(str(row["booking_id"]))) for row in found]
            began = time.perf_counter()
            for _ in range(50):
                opened = [views.opened(row, app.vault) for row in rows if row is not None]
            per_open = (time.perf_counter() - began) / 50
        assert all(row["email"] == "guest7@example.com" for row in opened)
        print(f"{'listing':14} {len(found):6} bookings of one customer: {per_query * 1000:.1f} ms per query")
        print(f"{'opening':14} {len(found):6} rows' sealed email and name: {per_open * 1000:.2f} ms")
        read_model.close()
        app.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bookings", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=500)
    asyncio.run(main(parser.parse_args()))
