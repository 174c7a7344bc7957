"""An example of another service publishing booking commands and reading their outcomes.

    python -m examples.publish_booking place --tenant demo --email ada@example.com
    python -m examples.publish_booking pay --tenant demo --booking <id> --amount 30.00
    python -m examples.publish_booking status --tenant demo --booking <id> --status HOLD
    python -m examples.publish_booking modify --tenant demo --booking <id> --form diet=vegan
    python -m examples.publish_booking cancel --tenant demo --booking <id> --reason "storm" --override
    python -m examples.publish_booking void --tenant demo --booking <id>
    python -m examples.publish_booking define-status --tenant demo --status POSTPONED --label Postponed
    python -m examples.publish_booking lifecycle --tenant demo --email ada@example.com

Each command is built with its contract model (so it is valid by construction), published keyed
by its booking id (the tenant id for custom statuses) with an idempotent producer, and the
`CommandOutcome` with the same command_id is awaited and printed. Publishing the same command
again is safe: it is applied once and answered again with the same outcome (try `--repeat 3`).
`lifecycle` runs a booking's whole life: placed, a deposit, the rest, moved to another day,
cancelled by staff with an override, each with its outcome. The guide is
docs/publishing-booking-commands.md.

Every command is signed with the publisher's own Ed25519 key (`--key`, created on first use;
only its public half leaves this machine): the platform operator registers that public key
with the bookings service for the tenants and capabilities this publisher needs, e.g.

    curl -X POST http://127.0.0.1:8002/v1/admin/publishers -H "Authorization: Bearer $ADMIN_API_TOKEN" \
      -H 'Content-Type: application/json' -d '{"name": "example-storefront", "public_key": "<printed>",
      "tenants": ["demo"], "capabilities": ["place", "pay", "modify", "cancel", "statuses", "override"]}'
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from backbone.signing import Signer
from contracts import bookings as contract
from contracts.catalog import Catalog
from contracts.envelope import Actor, Command
from contracts.outcomes import CommandOutcome
from contracts.topics import BOOKINGS_COMMAND_OUTCOMES, BOOKINGS_COMMANDS

ISSUER = "example-storefront"


def envelope(args: argparse.Namespace) -> dict[str, Any]:
    """What every command carries: a fresh command_id (keep it to retry), who sends it, when."""
    return {
        "command_id": uuid.uuid4(),
        "issued_at": datetime.now(UTC),
        "issued_by": ISSUER,
        "tenant_id": args.tenant,
        "correlation_id": uuid.uuid4(),
    }


def staff(args: argparse.Namespace) -> dict[str, Any]:
    return {"on_behalf_of": Actor(kind="staff", id=args.staff)} if args.staff else {}


def lines(days_ahead: float, lunches: int = 2) -> tuple[contract.BookingLine, ...]:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=days_ahead)
    return (
        contract.BookingLine(
            kind="item",
            ref="kayak",
            name="Kayak tour",
            starts_at=start,
            ends_at=start + timedelta(hours=3),
            quantity=2,
            unit_price=Decimal("45.00"),
        ),
        contract.BookingLine(
            kind="product",
            ref="lunch",
            name="Picnic lunch",
            starts_at=start,
            ends_at=start + timedelta(hours=1),
            quantity=lunches,
            unit_price=Decimal("12.00"),
        ),
    )


def place(args: argparse.Namespace) -> contract.PlaceBookingV2:
    booking_id = uuid.UUID(args.booking) if args.booking else uuid.uuid4()
    return contract.PlaceBookingV2(
        **envelope(args),
        booking_id=booking_id,
        booking_code=f"EX-{booking_id.hex[:6].upper()}",
        customer=contract.Customer(email=args.email, name="Example Customer"),
        account_id=uuid.UUID(args.account_id) if args.account_id else None,
        lines=lines(args.days_ahead),
        currency="EUR",
        amount_paid=Decimal(args.paid),
        status="PART" if Decimal(args.paid) > 0 else "PEND",
        form={"pickup": "Harbour gate"},
    )


def pay(args: argparse.Namespace) -> contract.RecordPayment:
    return contract.RecordPayment(
        **envelope(args),
        **staff(args),
        booking_id=uuid.UUID(args.booking),
        payment_id=args.payment_id or f"psp-{uuid.uuid4().hex[:12]}",
        amount=Decimal(args.amount),
        currency="EUR",
        method="card",
    )


def status(args: argparse.Namespace) -> contract.ChangeBookingStatus:
    return contract.ChangeBookingStatus(
        **envelope(args),
        **staff(args),
        booking_id=uuid.UUID(args.booking),
        status=args.status,
        reason=args.reason,
    )


def modify(args: argparse.Namespace) -> contract.ModifyBooking:
    customer = {k: v for k, v in (("email", args.new_email), ("name", args.name), ("phone", args.phone)) if v}
    return contract.ModifyBooking(
        **envelope(args),
        **staff(args),
        booking_id=uuid.UUID(args.booking),
        customer=contract.CustomerChange(**customer) if customer else None,
        form=dict(answer.split("=", 1) for answer in args.form) or None,
        reason=args.reason,
        override_customer_rules=args.override,
    )


def cancel(args: argparse.Namespace) -> contract.CancelBooking:
    return contract.CancelBooking(
        **envelope(args),
        **staff(args),
        booking_id=uuid.UUID(args.booking),
        reason=args.reason,
        refund_due=Decimal(args.refund_due) if args.refund_due else None,
        override_customer_rules=args.override,
    )


def void(args: argparse.Namespace) -> contract.VoidBooking:
    return contract.VoidBooking(
        **envelope(args), **staff(args), booking_id=uuid.UUID(args.booking), reason=args.reason
    )


def define_status(args: argparse.Namespace) -> contract.DefineCustomStatus:
    return contract.DefineCustomStatus(
        **envelope(args), status=args.status, label=args.label, locks_inventory=args.locks_inventory
    )


class Bus:
    """One producer for the commands, one consumer at the end of the outcomes topic."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.producer = AIOKafkaProducer(bootstrap_servers=args.kafka, enable_idempotence=True)
        self.outcomes = AIOKafkaConsumer(
            self.topic(BOOKINGS_COMMAND_OUTCOMES),
            bootstrap_servers=args.kafka,
            auto_offset_reset="latest",
            enable_auto_commit=False,
        )
        self.catalog = Catalog([CommandOutcome])
        self.signer = publisher_key(Path(args.key))

    def topic(self, name: str) -> str:
        return f"{self.args.namespace}.{name}" if self.args.namespace else name

    async def __aenter__(self) -> Bus:
        await self.outcomes.start()
        await self.producer.start()
        await self.outcomes.getmany(timeout_ms=500)  # join the end of the topic before publishing
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.producer.stop()
        await self.outcomes.stop()

    async def send(self, command: Command, repeat: int = 1) -> list[CommandOutcome]:
        """Publish a command (`repeat` times: a retry is safe) and wait for its outcomes."""
        body = command.model_dump_json().encode()
        # The signature (over the body, and the signed headers: none here) and the key's id.
        headers = [(name, value.encode()) for name, value in self.signer.sign(body, {}).items()]
        for _ in range(repeat):
            await self.producer.send_and_wait(
                self.topic(BOOKINGS_COMMANDS), body, key=command.key.encode(), headers=headers
            )
        print(f"published {command.command_type} {command.command_id} x{repeat} (key {command.key})")
        answers: list[CommandOutcome] = []
        async with asyncio.timeout(self.args.timeout):
            async for record in self.outcomes:
                outcome = self.catalog.decode(record.value)
                if outcome.command_id == command.command_id:
                    answers.append(outcome)
                    print(
                        f"outcome {len(answers)}: {outcome.outcome} version={outcome.aggregate_version} "
                        f"reason={outcome.reason_code}" + (f" ({outcome.message})" if outcome.message else "")
                    )
                    if len(answers) == repeat:
                        return answers
        return answers


def publisher_key(path: Path) -> Signer:
    """This publisher's signing key, created on first use (its public half is printed once)."""
    if not path.exists():
        signer = Signer.generate(ISSUER)
        signer.save(path)
        public = base64.b64encode(signer.public_key).decode()
        print(f"created the publisher key {path} (key id {signer.key_id}); register its public key: {public}")
    return Signer.load(ISSUER, path, setting="--key")


async def lifecycle(args: argparse.Namespace, bus: Bus) -> None:
    booking = place(args)
    print(f"booking {booking.booking_code} {booking.booking_id}, total 114.00 EUR")
    args.booking = str(booking.booking_id)
    await bus.send(booking)
    args.amount, args.payment_id = "30.00", None
    await bus.send(pay(args))  # a deposit: PART
    args.amount = "84.00"
    await bus.send(pay(args))  # the rest: PAID
    moved = contract.ModifyBooking(
        **envelope(args),
        booking_id=booking.booking_id,
        lines=lines(args.days_ahead + 1, lunches=3),
        reason="moved to the next day, one more lunch",
        override_customer_rules=True,
        on_behalf_of=Actor(kind="staff", id=args.staff or "example-staff"),
    )
    await bus.send(moved)  # 126.00 now: PART again, 12.00 due
    args.reason, args.refund_due, args.override = "storm warning", None, True
    await bus.send(cancel(args))  # BookingCancelled tells staff to refund 114.00 by hand


BUILDERS = {
    "place": place,
    "pay": pay,
    "status": status,
    "modify": modify,
    "cancel": cancel,
    "void": void,
    "define-status": define_status,
}


async def main(args: argparse.Namespace) -> int:
    async with Bus(args) as bus:
        if args.command == "lifecycle":
            await lifecycle(args, bus)
            return 0
        answers = await bus.send(BUILDERS[args.command](args), args.repeat)
    return 0 if answers and answers[0].outcome == "accepted" else 1


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kafka", default="127.0.0.1:9092")
    common.add_argument("--namespace", default="", help="TOPIC_NAMESPACE of the deployment")
    common.add_argument("--tenant", default="demo")
    common.add_argument("--repeat", type=int, default=1, help="publish the same command this often")
    common.add_argument("--timeout", type=float, default=30)
    common.add_argument(
        "--key", default=".local/publisher.key", help="this publisher's signing key (created if missing)"
    )
    common.add_argument("--staff", help="act for this staff member (on_behalf_of staff:<id>)")
    common.add_argument("--reason")
    commands = root.add_subparsers(dest="command", required=True)
    booking = argparse.ArgumentParser(add_help=False)
    booking.add_argument("--booking", help="the booking id")
    for name in ("place", "lifecycle"):
        sub = commands.add_parser(name, parents=[common, booking])
        sub.add_argument("--email", required=True)
        sub.add_argument("--account-id")
        sub.add_argument("--days-ahead", type=float, default=7)
        sub.add_argument("--paid", default="0.00")
    commands.add_parser("pay", parents=[common, booking]).add_argument("--amount", required=True)
    commands.choices["pay"].add_argument("--payment-id")
    commands.add_parser("status", parents=[common, booking]).add_argument("--status", required=True)
    sub = commands.add_parser("modify", parents=[common, booking])
    sub.add_argument("--new-email")
    sub.add_argument("--name")
    sub.add_argument("--phone")
    sub.add_argument("--form", action="append", default=[], metavar="KEY=ANSWER")
    sub.add_argument("--override", action="store_true", help="staff: override the customer rules")
    sub = commands.add_parser("cancel", parents=[common, booking])
    sub.add_argument("--refund-due")
    sub.add_argument("--override", action="store_true", help="staff: override the customer rules")
    commands.add_parser("void", parents=[common, booking])
    sub = commands.add_parser("define-status", parents=[common])
    sub.add_argument("--status", required=True)
    sub.add_argument("--label", required=True)
    sub.add_argument("--locks-inventory", action="store_true")
    return root


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["place", *argv]  # the first version of this example only placed bookings
    sys.exit(asyncio.run(main(parser().parse_args(argv))))
