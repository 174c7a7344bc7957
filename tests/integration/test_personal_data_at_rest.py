"""Personal data is never at rest in the clear on PostgreSQL: not in the tables, and so not in the
write-ahead log, which replicas, WAL archives and base backups copy and no vacuum reaches.

The three services run as processes on PostgreSQL (one database each) and the real broker. A
customer claims and verifies an account, gets a booking (placed by a storefront on the command
topic), cancels it, and staff redact the account. Before and after the redaction, every file
under the PostgreSQL data directory (`pg_wal` included) and every SQLite file of the services is
searched for the customer's email address and name: neither is found. (Only the command topic,
outside every store, carries them in the clear, as docs/publishing-booking-commands.md says.)
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.system import (
    System,
    command_record,
    place_booking_command,
    publish,
    set_tenant_settings,
    staff_headers,
    wait_for,
    wait_for_link,
)

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

TENANT = "sealed-at-rest"
PASSWORD = "a-long-and-unguessable-passphrase"


def clear_text_in(pg_data: Path, services_root: Path, secrets: list[bytes]) -> list[str]:
    """Where the secrets are: any file of the PostgreSQL data directory, any SQLite file."""
    files = [*pg_data.rglob("*"), *services_root.rglob("*.sqlite3*")]
    found = []
    for path in files:
        try:
            content = path.read_bytes() if path.is_file() else b""
        except (FileNotFoundError, PermissionError):  # a WAL segment recycled while we read
            continue
        found += [f"{path}: {s!r}" for s in secrets if s in content]
    return found


def test_no_email_or_name_in_any_postgresql_file_before_or_after_an_erasure(
    tmp_path, kafka_bootstrap_servers, mail_server, postgres, local_postgres
):
    system = System(
        tmp_path, kafka_bootstrap_servers, mail_server.port, store="postgres", postgres=postgres
    ).start()
    tag = uuid.uuid4().hex[:10]
    email, name = f"wilhelmina.{tag}@example.com", f"Wilhelmina Quartermaine{tag}"
    secrets = [email.encode(), name.encode(), f"quartermaine{tag}".encode()]
    data_dir = Path(local_postgres.data_dir)
    try:
        set_tenant_settings(system, TENANT, customer_logins_enabled=True, allow_cancel=True)
        claim = {"email": email, "name": name}
        response = httpx.post(f"{system.accounts.url}/v1/tenants/{TENANT}/accounts", json=claim, timeout=10)
        assert response.status_code == 202, response.text
        link = wait_for_link(system, email, "verify_email")
        verified = httpx.post(
            f"{system.accounts.url}/v1/email-verifications",
            json={"token": link.token, "password": PASSWORD},
            timeout=10,
        )
        assert verified.status_code == 200, verified.text
        login = {"email": email, "password": PASSWORD}
        session = httpx.post(f"{system.accounts.url}/v1/tenants/{TENANT}/sessions", json=login, timeout=10)
        customer = {"Authorization": f"Bearer {session.json()['token']}"}

        booking = place_booking_command(TENANT, email, paid="25.00")
        booking["customer"]["name"] = name
        asyncio.run(
            publish(kafka_bootstrap_servers, system.topic("bookings.commands"), [command_record(booking)])
        )
        bookings = httpx.Client(base_url=system.bookings.url, headers=customer, timeout=10)
        def listed() -> bool:  # 403 until bookings has heard that the address is verified
            response = bookings.get("/v1/me/bookings")
            return response.status_code == 200 and bool(response.json())

        wait_for(listed, timeout=60, what="the booking listed")
        quote = bookings.get(f"/v1/me/bookings/{booking['booking_id']}/cancellation-quote")
        assert quote.status_code == 200, quote.text
        confirm = quote.json()["confirm"]
        cancelled = bookings.post(confirm["href"], json=confirm["body"])
        assert cancelled.status_code == 200, cancelled.text
        mail_server.wait_for(lambda m: email in m.rcpt_tos and "cancel" in m.subject.lower(), timeout=60)

        # Staff find the customer by name through the blind index; the answer opens the seal.
        staff = staff_headers(system, TENANT)
        found = httpx.get(
            f"{system.accounts.url}/v1/staff/tenants/{TENANT}/accounts",
            headers=staff,
            params={"q": f"wilhelmina quartermaine{tag[:4]}"},
            timeout=10,
        ).json()
        assert [item["email"] for item in found["items"]] == [email]

        assert clear_text_in(data_dir, tmp_path, secrets) == []

        redaction = httpx.post(
            f"{system.accounts.url}/v1/staff/tenants/{TENANT}/accounts/{link.account_id}/redaction",
            headers=staff,
            timeout=10,
        )
        assert redaction.status_code == 204, redaction.text
        mail_server.wait_for(lambda m: email in m.rcpt_tos and "erased" in m.subject, timeout=60)

        def erased_in_bookings() -> bool:
            detail = bookings.get(f"/v1/me/bookings/{booking['booking_id']}")
            return detail.status_code == 401  # the session ended with the account

        wait_for(erased_in_bookings, timeout=60, what="the customer's session ended")
        assert clear_text_in(data_dir, tmp_path, secrets) == []
    finally:
        system.stop()
    for service in system.services.values():
        assert service.errors() == [], f"{service.name} logged errors"
