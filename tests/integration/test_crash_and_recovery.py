"""Nothing lost, nothing twice: kill -9 in the middle of the work, restart, count.

Counted where it shows: effects in the event store, events on the topic (by event_id), emails
at the SMTP server. These are the guarantees of backbone.inbox, backbone.outbox and the
notifier's sender under a real crash of a real process, on a real broker.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections import Counter
from datetime import UTC, datetime

import httpx
import pytest

from backbone.bus import H_SOURCE, H_SOURCE_POSITION
from backbone.commands import CommandReceipt
from backbone.personal import Vault
from services.bookings.domainmodel import Booking
from services.notifier.domainmodel import Email
from tests.support.bookings import pay, place
from tests.support.producers import Producer
from tests.support.system import (
    System,
    all_events,
    command_record,
    decode,
    open_store,
    place_booking_command,
    publish,
    publish_subject_keys,
    read_topic,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TENANT = "crash-test-tours"
N = 1000


def test_bookings_killed_while_applying_1000_commands(tmp_path, kafka_bootstrap_servers, mail_server):
    # Small batches so that the kill lands in the middle of the work, not after it.
    system = System(
        tmp_path,
        kafka_bootstrap_servers,
        mail_server.port,
        overrides={"bookings": {"CONSUMER_BATCH_SIZE": "20", "RELAY_BATCH_SIZE": "20"}},
    )
    system.start("bookings")
    commands = [place_booking_command(TENANT, f"guest{i}@example.com") for i in range(N)]
    asyncio.run(
        publish(kafka_bootstrap_servers, system.topic("bookings.commands"), map(command_record, commands))
    )

    def outcomes():
        return decode(
            asyncio.run(read_topic(kafka_bootstrap_servers, system.topic("bookings.command-outcomes")))
        )

    wait_for(lambda: len(outcomes()) >= 200, timeout=60, what="200 outcomes", interval=0.05)
    system.bookings.kill()
    assert len({o["command_id"] for o in outcomes()}) < N, "the kill came too late to prove much"

    system.bookings.start().wait_ready()
    wait_for(
        lambda: len({o["command_id"] for o in outcomes()}) == N,
        timeout=120,
        what="an outcome for every command",
    )
    placed = [
        e
        for e in decode(asyncio.run(read_topic(kafka_bootstrap_servers, system.topic("bookings.events"))))
        if e["event_type"] == "BookingPlaced"
    ]
    system.stop()

    # Every command applied once: one booking each, at version 1, and one receipt each.
    events = all_events(open_store(system, "bookings"))
    booking_ids = [e.originator_id for e in events if isinstance(e, Booking.Placed)]
    assert len(booking_ids) == N and len(set(booking_ids)) == N
    assert {str(b) for b in booking_ids} == {c["booking_id"] for c in commands}
    # Every event published: each event_id on the topic (a relay crash may repeat one, with
    # the same event_id, which consumers drop; it never loses one).
    assert len({e["event_id"] for e in placed}) == N
    final = {o["command_id"]: o for o in outcomes()}
    assert Counter(o["outcome"] for o in final.values()) == {"accepted": N}
    print(
        f"\nBookingPlaced records on the topic: {len(placed)} for {N} events "
        f"({len(placed) - N} re-published after the crash, same event_id)"
    )


BURST = int(os.environ.get("BOOKING_ACCOUNTS_BURST_COMMANDS", "2000"))
"""Commands in the kill -9 burst below. The issue's figure is 20,000 (set it for a full run);
the suite's default is smaller, and still large enough that the kill lands mid-burst."""


@pytest.mark.timeout(600 + BURST // 10)  # (a loaded machine applies 20 commands a second)
def test_bookings_killed_mid_burst_at_full_rate(tmp_path, kafka_bootstrap_servers, mail_server):
    # The service at its own batch sizes and rate (no small batches to slow it down): half the
    # burst places bookings, the other half pays each of them once, all published at once.
    # Killed with a tenth of the outcomes out, it must end with every command applied once
    # (a payment applied twice would show in the amounts) and one outcome per command.
    system = System(tmp_path, kafka_bootstrap_servers, mail_server.port).start("bookings")
    bookings = [place(TENANT, f"guest{i}@example.com") for i in range(BURST // 2)]
    payments = [pay(TENANT, body["booking_id"], "30.00") for body in bookings]
    commands = bookings + payments  # a booking's payment follows it in its partition (same key)
    outcomes_topic = system.topic("bookings.command-outcomes")

    def outcomes():
        return decode(asyncio.run(read_topic(kafka_bootstrap_servers, outcomes_topic)))

    asyncio.run(
        publish(kafka_bootstrap_servers, system.topic("bookings.commands"), map(command_record, commands))
    )
    wait_for(lambda: len(outcomes()) >= len(commands) // 10, timeout=600, what="a tenth of the outcomes")
    system.bookings.kill()
    answered_before = len({o["command_id"] for o in outcomes()})
    assert answered_before < len(commands), "the kill came after the burst: it proves nothing"

    system.bookings.start().wait_ready()
    wait_for(
        lambda: len({o["command_id"] for o in outcomes()}) == len(commands),
        timeout=BURST // 10 + 300,
        interval=1,
        what="an outcome for every command",
    )
    published = decode(asyncio.run(read_topic(kafka_bootstrap_servers, system.topic("bookings.events"))))
    answered = outcomes()
    system.stop()

    # 0 lost, 0 applied twice: one booking per placement, one payment per booking, in the store.
    events = all_events(open_store(system, "bookings"))
    placed = Counter(str(e.originator_id) for e in events if isinstance(e, Booking.Placed))
    paid = Counter(str(e.originator_id) for e in events if isinstance(e, Booking.PaymentRecorded))
    ids = {body["booking_id"] for body in bookings}
    assert set(placed) == ids and set(placed.values()) == {1}
    assert set(paid) == ids and set(paid.values()) == {1}
    received = Counter(e.command_id for e in events if isinstance(e, CommandReceipt.Received))
    assert len(received) == len(commands) and set(received.values()) == {1}
    # One outcome per delivery: every command delivered once, so one outcome each (a relay
    # re-publishing after the kill repeats an outcome with the same event_id; never a second one).
    per_command: dict[str, set[str]] = {}
    for outcome in answered:
        per_command.setdefault(outcome["command_id"], set()).add(outcome["event_id"])
    assert set(per_command) == {c["command_id"] for c in commands}
    assert {len(event_ids) for event_ids in per_command.values()} == {1}
    assert Counter(o["outcome"] for o in {o["command_id"]: o for o in answered}.values()) == {
        "accepted": len(commands)
    }
    # Every event published at least once (by event_id), and the amounts as paid once.
    payments_out = {e["booking_id"]: e for e in published if e["event_type"] == "BookingPaymentRecorded"}
    assert set(payments_out) == ids
    assert {e["amount_paid"] for e in payments_out.values()} == {"30.00"}
    assert len({e["event_id"] for e in published if e["event_type"] == "BookingPlaced"}) == len(ids)
    print(
        f"\n{len(commands)} commands, killed with {answered_before} answered; outcome records on "
        f"the topic: {len(answered)} ({len(answered) - len(commands)} re-published, same event_id)"
    )


def test_notifier_killed_while_handling_1000_events(tmp_path, kafka_bootstrap_servers, mail_server):
    # Each cancellation makes two emails: to the customer, and the notice to the staff address.
    batch = 20
    system = System(
        tmp_path,
        kafka_bootstrap_servers,
        mail_server.port,
        overrides={
            "notifier": {
                "CONSUMER_BATCH_SIZE": "50",
                "SEND_BATCH_SIZE": str(batch),
                "SENDING_LEASE_SECONDS": "5",  # interrupted emails are sent again soon
            }
        },
    )
    system.start("notifier")
    staff = httpx.patch(
        f"{system.notifier.url}/v1/staff/tenants/{TENANT}/branding",
        headers=Producer(system, kafka_bootstrap_servers, "accounts").announce_staff_member(TENANT),
        json={"staff_email": "desk@crash-test.example"},
    )
    assert staff.status_code == 200, staff.text

    bookings_vault = Vault("sqlite+pysqlite:///:memory:", "bookings")  # plays the bookings service
    signer = system.signer("bookings")

    def cancelled(i: int) -> tuple[bytes, bytes, dict[str, str]]:
        booking_id = uuid.uuid4()
        event = {
            "event_type": "BookingCancelled",
            "schema_version": 3,  # v3: the reason sealed (`sealed_reason`)
            "event_id": str(uuid.uuid4()),
            "occurred_at": datetime.now(UTC).isoformat(),
            "tenant_id": TENANT,
            "correlation_id": str(uuid.uuid4()),
            "booking_id": str(booking_id),
            "booking_code": f"C-{i:05d}",
            "account_id": None,
            "email": bookings_vault.seal(booking_id, f"guest{i}@example.com").model_dump(mode="json"),
            "name": bookings_vault.seal(booking_id, f"Guest {i}").model_dump(mode="json"),
            "cancelled_by": {"kind": "staff", "id": "s1"},
            "status_before": "PAID",
            "amount_paid": "10.00",
            "currency": "EUR",
            "refund_due": "10.00",
            "reason": None,
        }
        # As the bookings relay publishes it: with its upstream position, signed.
        body = json.dumps(event).encode()
        headers = {H_SOURCE: "bookings", H_SOURCE_POSITION: str(i + 1)}
        return (str(booking_id).encode(), body, signer.sign(body, headers))

    events = [cancelled(i) for i in range(N)]
    asyncio.run(publish_subject_keys(kafka_bootstrap_servers, system, bookings_vault))
    asyncio.run(publish(kafka_bootstrap_servers, system.topic("bookings.events"), events))
    wait_for(lambda: len(mail_server.messages) >= 600, timeout=90, interval=0.05, what="600 emails delivered")
    system.notifier.kill()
    assert len(mail_server.messages) < 2 * N, "the kill came too late to prove much"

    system.notifier.start().wait_ready()

    def distinct() -> int:
        return len({m.message["Message-ID"] for m in mail_server.messages})

    wait_for(lambda: distinct() == 2 * N, timeout=240, what="every email delivered")
    # Replays, late redeliveries and leases running out would show up now, if there were any.
    asyncio.run(asyncio.sleep(7))
    system.stop()

    # The one window SMTP leaves: killed after the server accepted an email, before the
    # notifier recorded it. Such an email is sent again after the restart, with the same
    # Message-ID; it must be one the notifier itself recorded as interrupted. Only the batch in
    # flight at the kill can be interrupted (its attempts are recorded before it is sent).
    events = all_events(open_store(system, "notifier"))
    queued = {e.originator_id: e for e in events if isinstance(e, Email.Queued)}
    message_ids = {f"<{email_id}@booking-accounts.notifier>": email_id for email_id in queued}
    interrupted = {e.originator_id for e in events if isinstance(e, Email.AttemptStarted) and e.interrupted}
    received = Counter(m.message["Message-ID"] for m in mail_server.messages)
    duplicated = {message_ids[m] for m, count in received.items() if count > 1}
    assert len(queued) == 2 * N and set(received) == set(message_ids)
    assert duplicated <= interrupted and len(interrupted) <= batch
    assert all(count <= 2 for count in received.values())
    # Each went to its own recipient: every customer one cancellation email, the staff address
    # one notice per booking (each Message-ID once, but for the interrupted copies above).
    assert all(
        m.rcpt_tos == (queued[message_ids[m.message["Message-ID"]]].recipient.value,)
        for m in mail_server.messages
    )
    staff_notices = {m.message["Message-ID"] for m in mail_server.messages_to("desk@crash-test.example")}
    assert len(staff_notices) == N
    assert {m.rcpt_tos[0] for m in mail_server.messages} == {f"guest{i}@example.com" for i in range(N)} | {
        "desk@crash-test.example"
    }
    print(
        f"\nemails: {sum(received.values())} delivered for {2 * N}; interrupted by the kill: "
        f"{len(interrupted)}; delivered twice: {len(duplicated)}"
    )
