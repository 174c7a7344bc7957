"""Faults on the way out, with the notifier as a real process on a real broker: the SMTP
server down for a while, a permanent refusal, and the whole topic read again from offset 0."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import httpx
import pytest
import sqlalchemy as sa

from contracts import accounts as acc
from services.notifier.domainmodel import Email
from tests.support.producers import Producer
from tests.support.system import System, all_events, open_store, read_topic, wait_for

pytestmark = pytest.mark.integration

TENANT = "stormy-tours"


def verified(producer: Producer, address: str) -> acc.EmailVerified:
    account_id = uuid.uuid4()
    return acc.EmailVerified(
        **producer.envelope(TENANT),
        account_id=account_id,
        email=producer.seal(account_id, address),
        name=producer.seal(account_id, "Guest"),
        first_time=True,
    )


def test_down_then_back_refused_then_retried_and_replayed_from_offset_0_without_a_second_email(
    tmp_path, kafka_bootstrap_servers, mail_server
):
    system = System(
        tmp_path,
        kafka_bootstrap_servers,
        mail_server.port,
        overrides={"notifier": {"RETRY_BASE_SECONDS": "1", "RETRY_MAX_SECONDS": "2"}},
    ).start("notifier")
    accounts = Producer(system, kafka_bootstrap_servers, "accounts")
    staff = accounts.announce_staff_member(TENANT)
    api = httpx.Client(base_url=system.notifier.url, headers=staff, timeout=10)

    def log(**params):
        return api.get(f"/v1/staff/tenants/{TENANT}/emails", params={"limit": 500, **params}).json()["emails"]

    # The SMTP server goes down; 40 customers verify their address meanwhile.
    mail_server.stop()
    addresses = [f"patient{i}@example.com" for i in range(40)]
    asyncio.run(accounts.publish(*(verified(accounts, a) for a in addresses)))
    wait_for(
        lambda: len(waiting := log(status="retrying")) == 40 and waiting,
        timeout=60,
        what="every email waiting for the server",
    )
    assert all(e["last_error"].startswith("cannot connect to the SMTP server") for e in log())
    time.sleep(3)  # several more rounds of attempts against a closed port
    mail_server.start()
    wait_for(lambda: len(mail_server.messages) >= 40, timeout=60, what="the 40 emails delivered")

    # A permanent refusal is parked at once, with the server's reason; staff send it again.
    mail_server.fail_recipient("gone@example.com")
    asyncio.run(accounts.publish(verified(accounts, "gone@example.com")))
    [parked] = wait_for(lambda: log(status="parked"), timeout=60, what="the refused email parked")
    assert parked["attempts"] == 1 and parked["last_error"].startswith("recipient refused: 550 5.1.1")
    assert parked["to"] == "gone@example.com"
    mail_server.accept_recipient("gone@example.com")
    retried = api.post(f"/v1/staff/tenants/{TENANT}/emails/{parked['email_id']}/retry")
    assert retried.status_code == 200, retried.text
    mail_server.wait_for(lambda m: "gone@example.com" in m.rcpt_tos, timeout=60)
    wait_for(lambda: len(log(status="sent")) == 41, timeout=30, what="all 41 sent in the log")
    before = Counter(m.message["Message-ID"] for m in mail_server.messages)
    assert sorted(m.rcpt_tos[0] for m in mail_server.messages) == sorted([*addresses, "gone@example.com"])
    assert set(before.values()) == {1}
    assert all(e["attempts"] >= 2 for e in log() if e["to"] in addresses)  # they did wait

    # Replay: forget every position of the inbox, so that it reads both topics again from
    # offset 0 and hands every event to its handler once more.
    system.notifier.stop()
    events_file = tmp_path / "notifier" / "notifier-events.sqlite3"
    engine = sa.create_engine(f"sqlite+pysqlite:///{events_file}")
    inbox = f"{system.namespace}.notifier.inbox"
    with engine.begin() as conn:
        forgotten = conn.execute(
            sa.text("DELETE FROM tracking WHERE application_name LIKE :inbox"), {"inbox": f"{inbox}%"}
        ).rowcount
    assert forgotten > 0
    records = sum(
        len(asyncio.run(read_topic(kafka_bootstrap_servers, system.topic(t))))
        for t in ("accounts.events", "bookings.events")
    )

    def positions() -> int:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT notification_id FROM tracking WHERE application_name LIKE :offsets"),
                {"offsets": f"{inbox}@%"},
            ).scalars()
            return sum(rows)  # each is the next offset of a partition: together, the records read

    system.notifier.start().wait_ready()
    wait_for(lambda: positions() == records, timeout=60, what="the inbox back at the end of the topics")
    time.sleep(3)  # anything queued by the replay would be sent by now
    system.stop()
    engine.dispose()

    assert Counter(m.message["Message-ID"] for m in mail_server.messages) == before  # zero new
    queued = [e for e in all_events(open_store(system, "notifier")) if isinstance(e, Email.Queued)]
    assert len(queued) == 41  # and nothing new queued either
    assert system.notifier.errors() == []
