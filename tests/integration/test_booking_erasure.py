"""A redacted customer is erased in bookings, on the real broker with real processes: the
customer details of every booking made under the account or with its verified email become
unreadable (keys deleted, erasures published so the notifier drops its copies), the read model
is scrubbed and a rebuild scrubs it the same way; the bookings and their amounts remain."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from backbone.blindindex import open_column
from backbone.credentials import load_or_create_sealing_keys
from backbone.personal import Vault
from contracts.personal import SubjectKey
from tests.support.bookings import AccountsFeed, BookingsBus, place, session_token
from tests.support.system import System, opened_key, publish_subject_keys, wait_for

pytestmark = pytest.mark.integration

TENANT = "forgetful-tours"


def rows(path, query):
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return conn.execute(query).fetchall()


def test_a_redacted_customer_is_erased_and_the_books_remain(tmp_path, kafka_bootstrap_servers, mail_server):
    system = System(tmp_path, kafka_bootstrap_servers, mail_server.port).start("bookings", "notifier")
    _, notifier_key = load_or_create_sealing_keys(tmp_path / "notifier" / "sealing.key")
    bus = BookingsBus(kafka_bootstrap_servers, system, AccountsFeed(TENANT, notifier_public_key=notifier_key))
    start = datetime.now(UTC) + timedelta(days=6)
    bus.hear(bus.accounts.settings(allow_cancel=True))
    guest = place(TENANT, "ada@example.com", starts_at=start)  # before the account existed
    bus.send(guest)
    account_id = uuid.uuid4()
    bus.hear(*bus.accounts.claimed_and_verified(account_id, "ada@example.com"))
    member = place(TENANT, "ada.work@example.com", starts_at=start, account_id=account_id)
    other = place(TENANT, "eve@example.com", starts_at=start)
    bus.send(member, other)
    headers = session_token(system.root / "accounts" / "session-signing-key.pem", account_id, TENANT)

    def listed():
        response = httpx.get(f"{system.bookings.url}/v1/me/bookings", headers=headers, timeout=10)
        return response.status_code == 200 and len(response.json()) == 2

    wait_for(listed, what="both of Ada's bookings listed")
    erased = {guest["booking_id"], member["booking_id"]}
    notifier_keys = tmp_path / "notifier" / "notifier-keys.sqlite3"

    def notifier_holds(subjects, erased_state):
        found = rows(notifier_keys, "SELECT subject_id, key IS NULL FROM subject_keys")
        return {s for s, gone in found if bool(gone) == erased_state} >= subjects

    wait_for(lambda: notifier_holds(erased, False), what="the notifier holding the bookings' keys")
    keys_before = {  # as the notifier opens them
        k["subject_id"]: opened_key(system, "notifier", SubjectKey.model_validate(k)).key
        for k in bus.read("bookings.subject-keys")
        if k["sealed_keys"]
    }

    bus.hear(bus.accounts.redacted(account_id))
    asyncio.run(publish_subject_keys(kafka_bootstrap_servers, system, bus.accounts.vault))

    def erasures_published():
        return {k["subject_id"] for k in bus.read("bookings.subject-keys") if not k["sealed_keys"]} >= erased

    wait_for(erasures_published, what="the erasures on bookings.subject-keys")
    wait_for(lambda: notifier_holds(erased, True), what="the notifier dropping its copies")
    assert httpx.get(f"{system.bookings.url}/v1/me/bookings", headers=headers).status_code == 401
    system.stop()

    # Nowhere in bookings' files: not the addresses, not the keys that opened them.
    data = tmp_path / "bookings"
    files = {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()}
    assert set(files) >= {"bookings-events.sqlite3", "bookings-views.sqlite3", "bookings-keys.sqlite3"}
    for name, content in files.items():
        assert b"ada@example.com" not in content and b"ada.work@example.com" not in content, name
        for subject in erased:
            assert base64.b64decode(keys_before[subject]) not in content, (name, subject)
    # Not even someone else's address is in the read model's file in the clear: it is sealed.
    assert b"eve@example.com" not in files["bookings-views.sqlite3"]

    # The books remain; the personal columns read as erased; a rebuild gives the same answers.
    query = (
        "SELECT booking_id, customer_subject, email_sealed, name_sealed, customer_erased, total, amount_paid,"
        " status"
        " FROM bookings ORDER BY code"
    )
    views = data / "bookings-views.sqlite3"
    vault = Vault(f"sqlite+pysqlite:///{data / 'bookings-keys.sqlite3'}", "bookings")

    def opened() -> list[tuple]:
        return [
            (r[0], open_column(vault, r[1], r[2]), open_column(vault, r[1], r[3]), *r[4:])
            for r in rows(views, query)
        ]

    before = opened()
    scrubbed = {r[0]: r[1:] for r in before}
    for booking_id in erased:
        assert scrubbed[booking_id][:3] == (None, None, 1) and scrubbed[booking_id][3:5] == (105, 0)
    assert scrubbed[other["booking_id"]][0] == "eve@example.com"
    views.unlink()
    system.bookings.start().wait_ready()
    wait_for(lambda: views.exists() and opened() == before, timeout=60, what="the same rows rebuilt")
    vault.close()
    system.stop()
    assert system.bookings.errors() == [] and system.notifier.errors() == []
