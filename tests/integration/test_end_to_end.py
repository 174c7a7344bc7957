"""The first real flow through all three services, as OS processes on a real Kafka broker,
with a real SMTP server receiving the emails: on SQLite stores and on PostgreSQL.

claim -> email with link -> follow it -> verified -> another service publishes a booking
command -> the customer sees the booking -> cancels -> BookingCancelled on the topic -> email.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from backbone.personal import Vault
from contracts.personal import SubjectKey
from tests.support.system import (
    System,
    command_record,
    decode,
    opened_key,
    place_booking_command,
    publish,
    read_topic,
    staff_headers,
    wait_for,
)

pytestmark = pytest.mark.integration

TENANT = "lakeside-tours"
PASSWORD = "kayak-at-dawn-on-a-still-lake"


@pytest.fixture(params=["sqlite", "postgres"])
def system(request, tmp_path, kafka_bootstrap_servers, mail_server):
    postgres = request.getfixturevalue("postgres") if request.param == "postgres" else None
    system = System(tmp_path, kafka_bootstrap_servers, mail_server.port, request.param, postgres)
    system.start()
    yield system
    system.stop()
    for service in system.services.values():
        assert service.errors() == [], f"{service.name} logged errors"


def test_claim_verify_book_see_cancel_and_be_told(system, mail_server, kafka_bootstrap_servers):
    accounts = httpx.Client(base_url=system.accounts.url)
    bookings = httpx.Client(base_url=system.bookings.url)
    staff = staff_headers(system, TENANT)

    # Staff turn customer accounts on, and allow cancelling up to 2 days before the start.
    response = accounts.patch(
        f"/v1/staff/tenants/{TENANT}/settings",
        headers=staff,
        json={
            "customer_logins_enabled": True,
            "allow_cancel": True,
            "cancel_cutoff": {"amount": 2, "unit": "days"},
            "timezone": "Europe/Vienna",
        },
    )
    assert response.status_code == 200, response.text

    # A customer claims an account; the answer says nothing about the address.
    email = f"ada-{uuid.uuid4().hex[:6]}@example.com"
    response = accounts.post(
        f"/v1/tenants/{TENANT}/accounts", json={"email": email.upper(), "name": "Ada", "password": PASSWORD}
    )
    assert response.status_code == 202, response.text

    # The verification email arrives with a working link, built from configuration.
    message = mail_server.wait_for(lambda m: email in m.rcpt_tos, timeout=30)
    assert message.subject == "Verify your email address"
    [link] = [url for url in message.links if "/verify-email?token=" in url]
    assert link.startswith(system.accounts.url)
    page = httpx.get(link)
    assert page.status_code == 200 and "Verify and save my password" in page.text

    # Not verified yet: no login.
    login = {"email": email, "password": PASSWORD}
    assert accounts.post(f"/v1/tenants/{TENANT}/sessions", json=login).status_code == 401

    # Following the link (the page's button posts the token and the password chosen there)
    # verifies the address, once.
    token = link.split("token=", 1)[1]
    form = {"token": token, "password": PASSWORD, "then": "password"}
    verified = httpx.post(f"{system.accounts.url}/verify-email", data=form)
    assert verified.status_code == 200 and "verified" in verified.text
    assert httpx.post(f"{system.accounts.url}/verify-email", data=form).status_code == 400

    session = accounts.post(f"/v1/tenants/{TENANT}/sessions", json=login)
    assert session.status_code == 200, session.text
    customer = {"Authorization": f"Bearer {session.json()['token']}"}
    assert accounts.get("/v1/me", headers=customer).json()["verified"] is True

    # Another service (a storefront) places a booking for this customer on the command topic.
    command = place_booking_command(TENANT, email, paid="30.00")
    asyncio.run(
        publish(kafka_bootstrap_servers, system.topic("bookings.commands"), [command_record(command)])
    )

    # Bookings learns of the verified account from the bus, so the customer sees the booking.
    def my_bookings():
        response = bookings.get("/v1/me/bookings", headers=customer)
        return response.status_code == 200 and response.json()

    [booking] = wait_for(my_bookings, timeout=30, what="the booking in the customer's list")
    assert booking["booking_id"] == command["booking_id"]
    assert [line["kind"] for line in booking["lines"]] == ["item", "product"]
    assert booking["total"] == "105.00" and booking["amount_paid"] == "30.00"
    assert booking["cancel"]["allowed"] is True and "cancel" in booking["links"]

    # The outcome of the command was published for the storefront.
    outcomes = decode(
        asyncio.run(read_topic(kafka_bootstrap_servers, system.topic("bookings.command-outcomes")))
    )
    assert [(o["command_id"], o["outcome"]) for o in outcomes] == [(command["command_id"], "accepted")]

    # The customer asks to cancel and is told what it means; then confirms. No refund happens,
    # the answer says what staff will refund.
    quote = bookings.get(f"/v1/me/bookings/{command['booking_id']}/cancellation-quote", headers=customer)
    assert quote.status_code == 200 and "not automatic" in quote.json()["refund_note"], quote.text
    confirm = quote.json()["confirm"]
    cancelled = bookings.post(
        confirm["href"], headers=customer, json={**confirm["body"], "reason": "weather"}
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "STOP" and cancelled.json()["refund_due"] == "30.00"

    # BookingCancelled is on the topic, with what staff need to refund by hand.
    def cancellation_event():
        events = decode(asyncio.run(read_topic(kafka_bootstrap_servers, system.topic("bookings.events"))))
        return [e for e in events if e["event_type"] == "BookingCancelled"]

    [event] = wait_for(cancellation_event, timeout=30, what="BookingCancelled on the topic")
    assert event["booking_id"] == command["booking_id"]
    # Personal data travels sealed: the topic holds ciphertext, which the subject's key (on the
    # compacted keys topic, for the services that need it) opens to the customer's address.
    raw_topics = b"".join(
        r.value or b""
        for name in ("bookings.events", "accounts.events")
        for r in asyncio.run(read_topic(kafka_bootstrap_servers, system.topic(name)))
    )
    # (b'"Ada', a JSON string starting with the name: the three letters alone turn up by chance
    # in base64 ciphertext about once in twelve runs.)
    assert email.encode() not in raw_topics and b'"Ada' not in raw_topics
    keys = decode(asyncio.run(read_topic(kafka_bootstrap_servers, system.topic("bookings.subject-keys"))))
    receiver = Vault("sqlite+pysqlite:///:memory:", "test")
    for key in keys:
        receiver.accept(opened_key(system, "notifier", SubjectKey.model_validate(key)))
    assert receiver.open(event["email"]).value == email
    assert event["status_before"] == "PEND" and event["amount_paid"] == "30.00"
    assert event["refund_due"] == "30.00" and event["currency"] == "EUR"
    assert event["cancelled_by"]["kind"] == "customer" and event["reason"] is None
    assert receiver.open(event["sealed_reason"]).value == "weather"  # the customer's words, sealed

    # And the customer is told, by email.
    notice = mail_server.wait_for(lambda m: email in m.rcpt_tos and "cancelled" in m.subject, timeout=30)
    assert command["booking_code"] in notice.text and "not automatic" in notice.text
