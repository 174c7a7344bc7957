"""A redaction, across the whole system: the three services as OS processes on the real broker
and a real SMTP server. A customer claims an account, verifies it, books, gets emails; staff
redact the account. The customer gets the confirmation, and afterwards their address and name
are in no file of any service (event stores, read models, vaults, logs), in no audit export,
and in no email log; the bookings and their amounts remain."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from tests.support.system import (
    System,
    command_record,
    notifier_staff_headers,
    place_booking_command,
    publish,
    set_tenant_settings,
    staff_headers,
    wait_for,
    wait_for_link,
)

pytestmark = pytest.mark.integration

TENANT = "forget-me-tours"
PASSWORD = "a-long-and-unguessable-passphrase"
AUDIT_TOKEN = "audit-token-for-erasure-at-least-32-characters"
SERVICES = ("accounts", "bookings", "notifier")


def traces(system: System, secrets: list[bytes]) -> list[str]:
    found = []
    for service in SERVICES:
        files = [p for p in (system.root / service).rglob("*") if p.is_file()]
        for path in [*files, system.services[service].log]:
            try:
                content = path.read_bytes()
            except FileNotFoundError:  # a journal SQLite removed since the listing: nothing left
                continue
            found += [f"{service}/{path.name}: {s!r}" for s in secrets if s in content]
    return found


def test_a_redaction_reaches_every_service_and_leaves_the_books(
    tmp_path, kafka_bootstrap_servers, mail_server
):
    audit = {"AUDIT_API_TOKEN": AUDIT_TOKEN}
    system = System(
        tmp_path, kafka_bootstrap_servers, mail_server.port, overrides={s: audit for s in SERVICES}
    ).start()
    try:
        set_tenant_settings(system, TENANT, customer_logins_enabled=True)
        tag = uuid.uuid4().hex[:8]
        email, name = f"oblivia.{tag}@example.com", f"Oblivia Fennimore-{tag}"
        claim = {"email": email, "name": name, "password": PASSWORD}
        assert (
            httpx.post(f"{system.accounts.url}/v1/tenants/{TENANT}/accounts", json=claim).status_code == 202
        )
        link = wait_for_link(system, email, "verify_email")
        verified = httpx.post(f"{system.accounts.url}/v1/email-verifications", json={"token": link.token})
        assert verified.status_code == 200, verified.text
        booking = place_booking_command(TENANT, email, paid="40.00")
        asyncio.run(
            publish(kafka_bootstrap_servers, system.topic("bookings.commands"), [command_record(booking)])
        )
        notifier_api = httpx.Client(
            base_url=system.notifier.url, headers=notifier_staff_headers(system, TENANT), timeout=10
        )

        def delivery_log():
            return notifier_api.get(f"/v1/staff/tenants/{TENANT}/emails").json()["emails"]

        wait_for(
            lambda: (
                {e["kind"] for e in delivery_log() if e["status"] == "sent"} >= {"verify_email", "welcome"}
            ),
            timeout=60,
            what="the verification and welcome emails sent",
        )
        secrets = [email.encode(), name.encode()]
        # Sealed everywhere at rest (read models included), so in no file even before.
        assert traces(system, secrets) == []

        # Staff redact the account in accounts; nothing is said to the other services but the bus.
        redaction = httpx.post(
            f"{system.accounts.url}/v1/staff/tenants/{TENANT}/accounts/{link.account_id}/redaction",
            headers=staff_headers(system, TENANT),
        )
        assert redaction.status_code == 204, redaction.text
        confirmation = mail_server.wait_for(
            lambda m: email in m.rcpt_tos and "erased" in m.subject, timeout=60
        )
        assert len(mail_server.messages_to(email)) == 3  # verify, welcome, the confirmation
        assert "erased your customer account" in confirmation.text and name not in confirmation.text

        # Then: no trace in any service's files or logs, in any email log, or any audit export.
        try:
            wait_for(lambda: not traces(system, secrets), timeout=60, interval=1, what="no trace anywhere")
        except TimeoutError:
            raise AssertionError(traces(system, secrets)) from None
        log = wait_for(
            lambda: (log := delivery_log()) and all(e["to"] is None for e in log) and log,
            timeout=30,
            what="no address left in the delivery log",
        )
        assert {e["kind"] for e in log} == {"verify_email", "welcome", "account_redacted"}
        detail = notifier_api.get(f"/v1/staff/tenants/{TENANT}/emails/{log[0]['email_id']}")
        assert detail.status_code == 200 and email not in detail.text
        auditor = {"Authorization": f"Bearer {AUDIT_TOKEN}"}
        for service in SERVICES:
            exported = httpx.get(
                f"{system.services[service].url}/v1/audit/export", headers=auditor, timeout=60
            ).text
            assert exported and email not in exported and name not in exported, service
        accounts_export = httpx.get(f"{system.accounts.url}/v1/audit/export", headers=auditor).text
        assert '"erased":true' in accounts_export.replace(" ", "")

        # The books remain: the booking and what was paid, with the customer erased.
        history = httpx.get(
            f"{system.bookings.url}/v1/audit/aggregates/{booking['booking_id']}/events", headers=auditor
        ).json()["events"]
        placed = history[0]["data"]
        assert history[0]["event_type"] == "Booking.Placed" and placed["amount_paid"] == "40.00"
        assert placed["customer"]["email"] == {"subject_id": booking["booking_id"], "erased": True}
    finally:
        system.stop()
    for service in system.services.values():
        assert service.errors() == [], f"{service.name} logged errors"
