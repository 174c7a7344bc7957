"""An example of another service publishing a booking command, and reading its outcome.

    python -m examples.publish_booking --tenant demo --email ada@example.com

It builds a `PlaceBooking` with the contract model (so it is valid by construction), publishes
it keyed by the booking id with an idempotent producer, and waits for the `CommandOutcome` with
the same command_id. Publishing the same command again is safe: it is applied once and answered
again with the same outcome (try `--repeat 3`).
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from contracts.bookings import BookingLine, Customer, PlaceBooking
from contracts.catalog import Catalog
from contracts.outcomes import CommandOutcome
from contracts.topics import BOOKINGS_COMMAND_OUTCOMES, BOOKINGS_COMMANDS


def build(tenant: str, email: str, days_ahead: int) -> PlaceBooking:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=days_ahead)
    booking_id = uuid.uuid4()
    return PlaceBooking(
        command_id=uuid.uuid4(),
        issued_at=datetime.now(UTC),
        issued_by="example-storefront",
        tenant_id=tenant,
        correlation_id=uuid.uuid4(),
        booking_id=booking_id,
        booking_code=f"EX-{booking_id.hex[:6].upper()}",
        customer=Customer(email=email, name="Example Customer"),
        lines=(
            BookingLine(
                kind="item",
                ref="kayak",
                name="Kayak tour",
                starts_at=start,
                ends_at=start + timedelta(hours=3),
                quantity=2,
                unit_price=Decimal("45.00"),
            ),
            BookingLine(
                kind="product",
                ref="lunch",
                name="Picnic lunch",
                starts_at=start,
                ends_at=start + timedelta(hours=1),
                quantity=2,
                unit_price=Decimal("12.00"),
            ),
        ),
        currency="EUR",
        amount_paid=Decimal("20.00"),
    )


async def main(args: argparse.Namespace) -> None:
    def topic(name: str) -> str:
        return f"{args.namespace}.{name}" if args.namespace else name

    command = build(args.tenant, args.email, args.days_ahead)
    outcomes = AIOKafkaConsumer(
        topic(BOOKINGS_COMMAND_OUTCOMES),
        bootstrap_servers=args.kafka,
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(bootstrap_servers=args.kafka, enable_idempotence=True)
    await outcomes.start()
    await producer.start()
    try:
        await outcomes.getmany(timeout_ms=500)  # join the end of the topic before publishing
        for _ in range(args.repeat):
            await producer.send_and_wait(
                topic(BOOKINGS_COMMANDS),
                command.model_dump_json().encode(),
                key=str(command.booking_id).encode(),
            )
        print(
            f"published {command.command_type} {command.command_id} x{args.repeat} "
            f"(booking {command.booking_code}, {command.booking_id})"
        )
        catalog, seen = Catalog([CommandOutcome]), 0
        async with asyncio.timeout(args.timeout):
            async for record in outcomes:
                outcome = catalog.decode(record.value)
                if outcome.command_id == command.command_id:
                    seen += 1
                    print(
                        f"outcome {seen}: {outcome.outcome} version={outcome.aggregate_version} "
                        f"reason={outcome.reason_code}"
                    )
                    if seen == args.repeat:
                        return
    finally:
        await producer.stop()
        await outcomes.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kafka", default="127.0.0.1:9092")
    parser.add_argument("--namespace", default="", help="TOPIC_NAMESPACE of the deployment")
    parser.add_argument("--tenant", default="demo")
    parser.add_argument("--email", required=True)
    parser.add_argument("--days-ahead", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=30)
    asyncio.run(main(parser.parse_args()))
