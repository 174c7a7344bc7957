"""Erasure in the notifier, with the notifier as a real process on a real broker.

A redacted customer gets the confirmation, although the erasure of their key (on the accounts
keys topic) arrives before `AccountRedacted`, as the accounts relay publishes them; afterwards
nothing the notifier holds shows their address. A booking's customer erased by bookings (on its
keys topic) disappears from the delivery log, and an email still waiting for them is withdrawn.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from backbone.personal import Vault
from contracts import accounts as acc
from contracts import bookings as bk
from contracts.envelope import Actor
from services.notifier.directory import Customer
from tests.support.producers import Producer
from tests.support.system import System, wait_for

pytestmark = pytest.mark.integration

TENANT = "forgetful-tours"


def files_containing(root: Path, text: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def test_the_confirmation_of_a_redaction_arrives_and_then_the_address_is_gone_everywhere(
    tmp_path, kafka_bootstrap_servers, mail_server
):
    system = System(
        tmp_path,
        kafka_bootstrap_servers,
        mail_server.port,
        overrides={"notifier": {"RETRY_BASE_SECONDS": "1", "RETRY_MAX_SECONDS": "1"}},
    ).start("notifier")
    accounts = Producer(system, kafka_bootstrap_servers, "accounts")
    staff = accounts.announce_staff_member(TENANT)
    api = httpx.Client(base_url=system.notifier.url, headers=staff, timeout=10)
    bookings = Producer(system, kafka_bootstrap_servers, "bookings")

    def log(**params):
        return api.get(f"/v1/staff/tenants/{TENANT}/emails", params=params).json()["emails"]

    # A customer's account: claimed, verified (two emails to them).
    account = uuid.uuid4()
    address = f"forget-me-{uuid.uuid4().hex[:6]}@example.com"
    sealed = {"email": accounts.seal(account, address), "name": accounts.seal(account, "Frida")}
    asyncio.run(
        accounts.publish(
            acc.AccountClaimed(
                **accounts.envelope(TENANT),
                account_id=account,
                **sealed,
                claimed_by="customer",
                link=accounts.link("https://accounts.example/verify-email?token=x"),
                link_expires_at=datetime.now(UTC) + timedelta(hours=24),
            ),
            acc.EmailVerified(**accounts.envelope(TENANT), account_id=account, **sealed, first_time=True),
        )
    )
    mail_server.wait_for(lambda m: address in m.rcpt_tos and "Welcome" in m.subject, timeout=60)
    wait_for(
        lambda: [e["to"] for e in log(account_id=str(account))] == [address, address],
        what="the account's two emails in the log",
    )

    # Redaction, as the accounts relay publishes it: the erased key first, then the event.
    accounts.erase(account)
    asyncio.run(accounts.publish_keys())
    wait_for(
        lambda: [e["to"] for e in log(account_id=str(account))] == [None, None],
        what="the address gone from the delivery log",
    )
    redacted = acc.AccountRedacted(
        **accounts.envelope(TENANT), account_id=account, redacted_by=Actor(kind="staff", id="dpo")
    )
    asyncio.run(accounts.publish(redacted))
    confirmation = mail_server.wait_for(lambda m: address in m.rcpt_tos and "erased" in m.subject, timeout=60)
    assert confirmation.subject == "Your personal data has been erased"
    assert len(mail_server.messages_to(address)) == 3

    def all_erased():
        entries = log(account_id=str(account))
        return (
            len(entries) == 3 and all(e["to"] is None and e["recipient_erased"] for e in entries) and entries
        )

    entries = wait_for(all_erased, what="the confirmation's address erased too")
    assert {e["kind"]: e["status"] for e in entries}["account_redacted"] == "sent"

    # A booking's customer, erased by bookings while their email still waits for the server.
    booking = uuid.uuid4()
    waiting = f"bo-{uuid.uuid4().hex[:6]}@example.com"
    mail_server.fail_recipient(waiting, temporary=True)
    asyncio.run(
        bookings.publish(
            bk.BookingCancelled(
                **bookings.envelope(TENANT),
                booking_id=booking,
                booking_code="FORGET-1",
                account_id=None,
                email=bookings.seal(booking, waiting),
                name=bookings.seal(booking, "Bo"),
                cancelled_by=Actor(kind="customer", id="guest"),
                status_before="PAID",
                amount_paid=Decimal("12.00"),
                currency="EUR",
                refund_due=Decimal("12.00"),
            )
        )
    )
    wait_for(
        lambda: (
            [
                (e["kind"], e["to"], e["status"])
                for e in log(booking_id=str(booking))
                if e["kind"] == "booking_cancelled"
            ]
            == [("booking_cancelled", waiting, "retrying")]
        ),
        timeout=60,
        what="the customer's email waiting for the server",
    )
    bookings.erase(booking)
    asyncio.run(bookings.publish_keys())
    wait_for(
        lambda: (
            [(e["to"], e["status"]) for e in log(booking_id=str(booking)) if e["kind"] == "booking_cancelled"]
            == [(None, "withdrawn")]
        ),
        timeout=60,
        what="the email withdrawn and its address gone",
    )
    mail_server.accept_recipient(waiting)
    system.stop()
    assert mail_server.messages_to(waiting) == []
    assert system.notifier.errors() == []

    # Nothing the notifier keeps (event store, read model, vault) nor its log has the address.
    assert files_containing(tmp_path / "notifier", address) == []
    assert address not in system.notifier.log.read_text()
    vault = Vault(f"sqlite+pysqlite:///{tmp_path / 'notifier' / 'notifier-keys.sqlite3'}", "notifier")
    try:
        for subject in (account, Customer.contact_subject(account), booking):
            assert vault.key(subject) is None, subject  # known, and erased
    finally:
        vault.close()
