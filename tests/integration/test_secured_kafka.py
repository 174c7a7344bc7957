"""The whole system on a secured broker: SASL_SSL only (a CA and certificates made with openssl
on the spot), ACLs (StandardAuthorizer), a principal per service, one for command publishers and
one for the operator tool, each with exactly the ACLs derived from `contracts.topics.rights`.

The topics are made by the operator tool (`booking-accounts topics create`, as booking-ops),
the services run with TOPIC_AUTO_CREATE=false, and the flow goes through all three as OS
processes: claim, emailed link, verify, a booking command from a publisher, the customer's
list, the outcome read by the publisher, a cancellation, its email. Then the attacks: the
notifier's principal writing or reading `bookings.commands`, a service reading a topic it only
writes, every principal's rights asked of the broker itself; and an ACL taken away from a
running service: an error in its log and /ready 503 naming it, until it is granted again.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import TopicAuthorizationFailedError

from backbone import kafkaacl
from backbone.kafkaacl import Acl
from contracts.topics import BOOKINGS_COMMANDS, OPS_USER, PUBLISHER_USER, SERVICES, all_topics, rights
from deploy.local.securekafka import SecuredKafka
from tests.support.system import (
    REPO,
    System,
    command_record,
    decode,
    place_booking_command,
    publish,
    read_topic,
    staff_headers,
    wait_for,
)

pytestmark = pytest.mark.integration

TENANT = "harbour-sailing"
PASSWORD = "a-long-and-unguessable-passphrase"


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    kafka = SecuredKafka(tmp_path_factory.mktemp("secured-kafka"), namespace=f"s{uuid.uuid4().hex[:8]}")
    kafka.start()
    yield kafka
    kafka.close()


def ops_tool(secured: SecuredKafka, *args: str) -> subprocess.CompletedProcess[str]:
    """`booking-accounts ...` as an operator on this cluster (principal booking-ops)."""
    env = {**os.environ, **secured.env(OPS_USER), "TOPIC_NAMESPACE": secured.namespace}
    return subprocess.run(
        [sys.executable, "-m", "ops", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )


async def allowed(secured: SecuredKafka, principal: str, topics: list[str]) -> list[str]:
    """What the broker denies `principal` of reading and writing every topic."""
    client = AIOKafkaClient(
        bootstrap_servers=secured.bootstrap_servers, **secured.security(principal).for_aiokafka()
    )
    await client.bootstrap()
    try:
        return await kafkaacl.denials(client, topics, topics, [])
    finally:
        await client.close()


def test_the_whole_flow_over_sasl_ssl_with_a_principal_per_service_and_acls(secured, tmp_path, mail_server):
    topic = secured.topic

    # The operator tool makes the topics (the services may not), as its list says.
    listed = ops_tool(secured, "topics", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {t["topic"] for t in json.loads(listed.stdout)} == {topic(t) for t in all_topics()}
    made = ops_tool(secured, "topics", "create", "--json")
    assert made.returncode == 0, made.stderr
    assert set(json.loads(made.stdout)["created"]) == {topic(t) for t in all_topics()}
    again = ops_tool(secured, "topics", "create", "--json")
    assert json.loads(again.stdout)["created"] == []  # idempotent

    # Each principal may do exactly what the table says, as the broker's own authorizer answers.
    every = [topic(t) for t in all_topics()]
    for principal, own in rights().items():
        denied = asyncio.run(allowed(secured, principal, every))
        expected = sorted(
            [f"Read on topic {topic(t)}" for t in all_topics() if t not in own.reads]
            + [f"Write on topic {topic(t)}" for t in all_topics() if t not in own.writes]
        )
        assert sorted(denied) == expected, principal

    # The three services, each as its own principal, creating nothing.
    system = System(
        tmp_path,
        secured.bootstrap_servers,
        mail_server.port,
        namespace=secured.namespace,
        overrides={name: {**secured.env(name), "TOPIC_AUTO_CREATE": "false"} for name in SERVICES},
    )
    system.start()  # ready: its topics exist and Kafka allows it all it needs
    try:
        customer = _flow(system, secured, mail_server)
        _attacks(secured)
        _an_acl_taken_away_from_a_running_service(system, secured, mail_server, customer)
    finally:
        system.stop()
    for service in (system.accounts, system.bookings):
        assert service.errors() == [], f"{service.name} logged errors"


def _flow(system: System, secured: SecuredKafka, mail_server) -> Customer:
    accounts = httpx.Client(base_url=system.accounts.url, timeout=10)
    settings = {
        "customer_logins_enabled": True,
        "allow_cancel": True,
        "cancel_cutoff": {"amount": 2, "unit": "days"},
    }
    response = accounts.patch(
        f"/v1/staff/tenants/{TENANT}/settings", headers=staff_headers(system, TENANT), json=settings
    )
    assert response.status_code == 200, response.text

    email = f"grace-{uuid.uuid4().hex[:6]}@example.com"
    response = accounts.post(
        f"/v1/tenants/{TENANT}/accounts", json={"email": email, "name": "Grace", "password": PASSWORD}
    )
    assert response.status_code == 202, response.text
    message = mail_server.wait_for(lambda m: email in m.rcpt_tos, timeout=60)  # accounts -> notifier
    [link] = [url for url in message.links if "/verify-email?token=" in url]
    form = {"token": link.split("token=", 1)[1], "password": PASSWORD, "then": "password"}
    assert httpx.post(f"{system.accounts.url}/verify-email", data=form, timeout=10).status_code == 200
    session = accounts.post(f"/v1/tenants/{TENANT}/sessions", json={"email": email, "password": PASSWORD})
    assert session.status_code == 200, session.text
    customer = {"Authorization": f"Bearer {session.json()['token']}"}

    customer = Customer(email, {"Authorization": f"Bearer {session.json()['token']}"})
    command = _book_and_cancel(system, secured, customer)

    # The publisher reads its outcome.
    outcomes_topic = secured.topic("bookings.command-outcomes")
    outcomes = decode(
        asyncio.run(read_topic(secured.bootstrap_servers, outcomes_topic, secured.security(PUBLISHER_USER)))
    )
    assert [(o["command_id"], o["outcome"]) for o in outcomes] == [(command["command_id"], "accepted")]

    # The notifier (reading bookings.events) tells the customer of the cancellation.
    notice = mail_server.wait_for(
        lambda m: email in m.rcpt_tos and "cancelled" in m.subject and command["booking_code"] in m.text,
        timeout=60,
    )
    assert "not automatic" in notice.text
    return customer


@dataclass(frozen=True)
class Customer:
    email: str
    headers: dict[str, str]


def _book_and_cancel(system: System, secured: SecuredKafka, customer: Customer) -> dict:
    """A storefront publishes a booking command as the publishers' principal; the customer
    sees the booking and cancels it. The command."""
    bookings = httpx.Client(base_url=system.bookings.url, timeout=10)
    command = place_booking_command(TENANT, customer.email, paid="20.00")
    commands = secured.topic(BOOKINGS_COMMANDS)
    asyncio.run(
        publish(
            secured.bootstrap_servers, commands, [command_record(command)], secured.security(PUBLISHER_USER)
        )
    )

    def listed():
        response = bookings.get("/v1/me/bookings", headers=customer.headers)
        return response.status_code == 200 and command["booking_id"] in {
            b["booking_id"] for b in response.json()
        }

    wait_for(listed, timeout=60, what="the booking in the customer's list")
    path = f"/v1/me/bookings/{command['booking_id']}/cancellation-quote"
    quote = bookings.get(path, headers=customer.headers)
    assert quote.status_code == 200, quote.text
    confirm = quote.json()["confirm"]
    cancelled = bookings.post(
        confirm["href"], headers=customer.headers, json={**confirm["body"], "reason": "storm"}
    )
    assert cancelled.status_code == 200, cancelled.text
    return command


def _attacks(secured: SecuredKafka) -> None:
    commands = secured.topic(BOOKINGS_COMMANDS)
    as_notifier = secured.security("notifier").for_aiokafka()

    async def notifier_writes_a_command() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=secured.bootstrap_servers, enable_idempotence=True, **as_notifier
        )
        await producer.start()
        try:
            await producer.send_and_wait(commands, b'{"command_type": "CancelBooking"}', key=b"forged")
        finally:
            await producer.stop()

    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(notifier_writes_a_command())

    async def reads(principal: str, topic: str) -> None:
        consumer = AIOKafkaConsumer(
            topic,
            group_id=secured.topic(f"{principal}.spy"),  # a group it may use
            bootstrap_servers=secured.bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **secured.security(principal).for_aiokafka(),
        )
        try:
            await consumer.start()
            for _ in range(20):
                await consumer.getmany(timeout_ms=500)
        finally:
            await consumer.stop()

    # A topic it may not even see (the notifier and the commands), and one it may see because it
    # writes it but not read (bookings and its own events): refused either way.
    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(reads("notifier", commands))
    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(reads("bookings", secured.topic("bookings.events")))

    # Nothing forged reached the commands topic: only the storefront's one command is there.
    records = asyncio.run(read_topic(secured.bootstrap_servers, commands, secured.security("admin")))
    assert len(records) == 1


def _an_acl_taken_away_from_a_running_service(
    system: System, secured: SecuredKafka, mail_server, customer: Customer
) -> None:
    """An operator takes the notifier's Read on bookings.events away: the consumer would just be
    given no partitions of it; the notifier says so instead. What is published meanwhile is
    emailed once it is granted again."""
    events = secured.topic("bookings.events")
    taken = [Acl("notifier", "topic", events, "literal", ("Read",))]
    secured.revoke(taken)

    def not_ready_saying_why():
        response = httpx.get(f"{system.notifier.url}/ready", timeout=10)
        return response.status_code == 503 and f"Read on topic {events}" in response.text and response.text

    reason = wait_for(not_ready_saying_why, timeout=60, what="the notifier to say Kafka denies it")
    assert "Kafka denies notifier" in reason
    logged = [json.loads(line) for line in system.notifier.errors()]
    assert any(
        entry.get("principal") == "notifier" and f"Read on topic {events}" in entry.get("denied", [])
        for entry in logged
    ), logged

    command = _book_and_cancel(system, secured, customer)  # bookings.events the notifier cannot read

    # The cancellation is on bookings.events; given the time it usually takes to be emailed, it
    # is not, while the notifier may not read it. (A slow machine can only make this pass.)
    def cancellation_on_the_topic() -> bool:
        records = asyncio.run(read_topic(secured.bootstrap_servers, events, secured.security("admin")))
        return any(
            e["booking_id"] == command["booking_id"] and e["event_type"] == "BookingCancelled"
            for e in decode(records)
        )

    wait_for(cancellation_on_the_topic, timeout=60, what="BookingCancelled on bookings.events")
    time.sleep(5)
    assert not [m for m in mail_server.messages if command["booking_code"] in m.text]
    granted_at = datetime.now(UTC)
    secured.grant(taken)
    wait_for(
        lambda: httpx.get(f"{system.notifier.url}/ready", timeout=10).status_code == 200,
        timeout=60,
        what="the notifier ready again once granted",
    )
    notice = mail_server.wait_for(
        lambda m: (
            customer.email in m.rcpt_tos and "cancelled" in m.subject and command["booking_code"] in m.text
        ),
        timeout=90,
    )
    assert notice.received_at >= granted_at  # not read (nor emailed) while denied; not lost either
