"""The bus attacks of test_bus_forgery.py and test_command_publishers.py, performed against the
real services (notifier and bookings as OS processes) over a real broker and SMTP server: the
attacker writes topics directly, with any headers, and holds no registered key.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from backbone.bus import H_SOURCE, H_SOURCE_POSITION, Outgoing
from backbone.credentials import new_token, staff_api_key, token_hash
from backbone.signing import Signer
from contracts import accounts as acc
from deploy.local.mailcatcher import MailCatcher
from tests.support.producers import Producer
from tests.support.system import (
    System,
    command_record,
    place_booking_command,
    publish,
    read_topic,
    wait_for,
)

pytestmark = pytest.mark.integration

TENANT = "lakeside"
ATTACKER = Signer.generate("accounts")  # says it is accounts; nobody trusts its key


def erasure_of(subject_id, owner):
    """A keys-topic record saying the subject was erased (`key: null`), naming `owner`."""
    return {
        "subject_id": str(subject_id),
        "owner": owner,
        "key": None,
        "erased_at": datetime.now(UTC).isoformat(),
    }


@pytest.fixture(scope="module")
def mail(tmp_path_factory) -> Iterator[MailCatcher]:
    catcher = MailCatcher(port=0, directory=tmp_path_factory.mktemp("mail"))
    catcher.start()
    yield catcher
    catcher.stop()


@pytest.fixture(scope="module")
def system(tmp_path_factory, kafka_bootstrap_servers, mail) -> Iterator[System]:
    root = tmp_path_factory.mktemp("bus-attacks")
    running = System(root, kafka_bootstrap_servers, mail.port).start("bookings", "notifier")
    yield running
    running.stop()
    assert running.bookings.errors() == [] and running.notifier.errors() == []


@pytest.fixture(scope="module")
def accounts(system) -> Producer:
    """Plays the accounts service (its real bus key), one for the module: its source positions
    keep growing, as a real relay's do."""
    return Producer(system, system.kafka, "accounts")


def dead_letters(system, service) -> list[tuple[str, bytes]]:
    records = asyncio.run(read_topic(system.kafka, system.topic(f"{service}.dead-letters")))
    return [(dict(r.headers)["dlq-reason"].decode(), r.value) for r in records]


def forge(system, event, headers, topic="accounts.events") -> None:
    """The attacker's record: any bytes, any headers, straight onto the topic."""
    record = (event.key.encode(), event.model_dump_json().encode(), headers)
    asyncio.run(publish(system.kafka, system.topic(topic), [record]))


def magic_link(accounts: Producer, address: str) -> acc.MagicLinkRequested:
    account_id = uuid.uuid4()
    return acc.MagicLinkRequested(
        **accounts.envelope(TENANT),
        account_id=account_id,
        email=accounts.seal(account_id, address),
        name=accounts.seal(account_id, "Ada"),
        link=accounts.link(f"https://evil.example/login?as={address}"),
        link_expires_at=datetime.now(UTC) + timedelta(minutes=10),
    )


def test_a_forged_magic_link_requested_makes_the_notifier_send_nothing(system, accounts, mail):
    forged = magic_link(accounts, "victim@example.com")
    asyncio.run(accounts.publish_keys())  # even with the subject's key known: not the sender
    headers = Outgoing("", forged, {H_SOURCE: "accounts", H_SOURCE_POSITION: "1"}).all_headers()
    forge(system, forged, ATTACKER.sign(forged.model_dump_json().encode(), headers))
    forge(system, forged, headers)  # and unsigned
    body = forged.model_dump_json().encode()
    wait_for(
        lambda: (
            {r for r, v in dead_letters(system, "notifier") if v == body}
            >= {"unsigned", "unknown_signing_key"}
        ),
        what="both forgeries dead-lettered by the notifier",
    )
    genuine = magic_link(accounts, "ada@example.com")
    asyncio.run(accounts.publish(genuine))
    mail.wait_for(lambda m: "ada@example.com" in m.rcpt_tos, timeout=60)
    assert mail.messages_to("victim@example.com") == []
    metrics = httpx.get(f"{system.notifier.url}/metrics", timeout=10).text
    assert 'bus_refused_total{consumer="' in metrics and 'reason="unknown_signing_key"' in metrics


def test_a_forged_huge_source_position_does_not_silence_later_genuine_events(system, accounts, mail):
    first = magic_link(accounts, "first@example.com")
    asyncio.run(accounts.publish_keys())
    poison = {H_SOURCE: "accounts", H_SOURCE_POSITION: str(2**62)}
    forge(system, first, poison)
    # A genuine event on the same partition (same key), at a position far below the forged one.
    later = magic_link(accounts, "later@example.com").model_copy(
        update={"account_id": first.account_id, "email": accounts.seal(first.account_id, "later@example.com")}
    )
    asyncio.run(accounts.publish(later))
    mail.wait_for(lambda m: "later@example.com" in m.rcpt_tos, timeout=60)
    assert mail.messages_to("first@example.com") == []


def test_a_forged_staff_member_added_does_not_open_the_staff_api(system, accounts):
    staff_id, secret = uuid.uuid4(), new_token()
    forged = acc.StaffMemberAdded(**accounts.envelope(TENANT), staff_id=staff_id, key_hash=token_hash(secret))
    headers = Outgoing("", forged, {H_SOURCE: "accounts", H_SOURCE_POSITION: "7"}).all_headers()
    # Signed by a genuine service that may not say this: bookings.
    forge(system, forged, system.signer("bookings").sign(forged.model_dump_json().encode(), headers))
    body = forged.model_dump_json().encode()
    wait_for(
        lambda: ("not_from_owner", body) in dead_letters(system, "notifier"), what="the forgery dead-lettered"
    )
    genuine = accounts.announce_staff_member(TENANT)  # a later genuine one is admitted
    attacker = {"Authorization": f"Bearer {staff_api_key(staff_id, secret)}"}
    url = f"{system.notifier.url}/v1/staff/tenants/{TENANT}/branding"
    assert httpx.get(url, headers=genuine, timeout=10).status_code == 200
    assert httpx.get(url, headers=attacker, timeout=10).status_code == 401


def test_an_erasure_on_a_non_owner_keys_topic_erases_nothing(system, accounts, mail):
    event = magic_link(accounts, "kept@example.com")
    asyncio.run(accounts.publish_keys())
    erasure = json.dumps(erasure_of(event.account_id, "bookings")).encode()
    record = (str(event.account_id).encode(), erasure, system.signer("bookings").sign(erasure, {}))
    asyncio.run(publish(system.kafka, system.topic("bookings.subject-keys"), [record]))
    unsigned = erasure.replace(b'"bookings"', b'"accounts"')
    record = (str(event.account_id).encode(), unsigned, {})
    asyncio.run(publish(system.kafka, system.topic("accounts.subject-keys"), [record]))
    wait_for(
        lambda: ("unsigned", unsigned) in dead_letters(system, "notifier"),
        what="the unsigned erasure refused",
    )
    asyncio.run(accounts.publish(event))  # the subject's data still opens: an email goes out
    mail.wait_for(lambda m: "kept@example.com" in m.rcpt_tos, timeout=60)


def test_commands_from_an_unsigned_or_unauthorised_publisher_are_refused_with_a_final_reason(system):
    mallory = Signer.generate("mallory")
    system.register_publisher("mallory", mallory.public_key, ["harbour"], ["place"])
    other_tenant = place_booking_command(TENANT, "x@example.com") | {"issued_by": "mallory"}
    unsigned = place_booking_command(TENANT, "y@example.com")
    genuine = place_booking_command(TENANT, "z@example.com")
    body = json.dumps(other_tenant).encode()
    records = [
        (other_tenant["booking_id"].encode(), body, mallory.sign(body, {})),
        (unsigned["booking_id"].encode(), json.dumps(unsigned).encode(), {}),
        command_record(genuine),
    ]
    asyncio.run(publish(system.kafka, system.topic("bookings.commands"), records))

    def outcomes():
        found = asyncio.run(read_topic(system.kafka, system.topic("bookings.command-outcomes")))
        return {json.loads(r.value)["command_id"]: json.loads(r.value) for r in found}

    wanted = {c["command_id"] for c in (other_tenant, unsigned, genuine)}
    answers = wait_for(lambda: wanted <= set(outcomes()) and outcomes(), what="three outcomes")
    assert answers[genuine["command_id"]]["outcome"] == "accepted"
    for command, reason in ((other_tenant, "tenant_not_allowed"), (unsigned, "unsigned")):
        answer = answers[command["command_id"]]
        assert (answer["outcome"], answer["final"], answer["reason_code"]) == ("rejected", True, reason)
    reasons = {r for r, _ in dead_letters(system, "bookings")}
    assert {"tenant_not_allowed", "unsigned"} <= reasons
