"""The bus, as an attacker who can write to a topic sees it: forged events, forged erasures,
forged positions, keys read off a topic. Each test performs one attack against the real
modules (inbox, keys receiver, vault, signing) and shows it refused; the services themselves
do the same against a real broker in tests/security/test_bus_services.py.

The attacker can produce any record on any topic (a leaked client credential, a missing ACL)
but holds no service's private bus key. One attack is by a genuine service that oversteps:
bookings signing what only accounts may say.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.structs import ConsumerRecord
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage

from backbone import metrics
from backbone.bus import H_SOURCE, H_SOURCE_POSITION, Outgoing
from backbone.credentials import new_token, token_hash
from backbone.eventstore import store_env
from backbone.inbox import Inbox
from backbone.personal import Vault
from backbone.settings import StoreSettings
from backbone.signing import KeyFileMissing, Keyring, Signer, TrustedKey, Verifier, key_settings
from backbone.subjectkeys import SubjectKeyReceiver, key_records
from contracts import accounts as acc
from contracts.catalog import ALL_EVENTS, Catalog
from contracts.topics import owners
from services.notifier.application import Notifier
from services.notifier.handlers import HANDLERS

EVENTS, KEYS, BOOKING_KEYS, DLQ = (
    "accounts.events",
    "accounts.subject-keys",
    "bookings.subject-keys",
    "notifier.dead-letters",
)
ACCOUNTS, BOOKINGS, NOTIFIER = (Signer.generate(s) for s in ("accounts", "bookings", "notifier"))
KEYRING = Keyring([TrustedKey(s.identity, s.key_id, s.public_key) for s in (ACCOUNTS, BOOKINGS, NOTIFIER)])
ATTACKER = Signer.generate("accounts")  # calls itself accounts; nobody trusts its key
TENANT = "lakeside"


def erasure_of(subject_id, owner):
    """A keys-topic record saying the subject was erased (`key: null`), naming `owner`."""
    return {
        "subject_id": str(subject_id),
        "owner": owner,
        "key": None,
        "erased_at": datetime.now(UTC).isoformat(),
    }


def record(topic, offset, body: bytes, headers: dict[str, str], key=b"k", partition=0):
    return ConsumerRecord(
        topic,
        partition,
        offset,
        0,
        0,
        key,
        body,
        None,
        len(key),
        len(body),
        tuple((k, v.encode()) for k, v in headers.items()),
    )


class Accounts:
    """The genuine accounts service: its vault, its relay's headers, its signature."""

    def __init__(self):
        self.vault = Vault("sqlite+pysqlite:///:memory:", "accounts")
        self.position = 0

    def envelope(self):
        return {
            "event_id": uuid.uuid4(),
            "occurred_at": datetime.now(UTC),
            "tenant_id": TENANT,
            "correlation_id": uuid.uuid4(),
        }

    def headers(self, event, position=None, signer=ACCOUNTS, source="accounts"):
        if position is None:
            self.position += 1
            position = self.position
        headers = Outgoing(EVENTS, event, {H_SOURCE: source, H_SOURCE_POSITION: str(position)}).all_headers()
        return signer.sign(event.model_dump_json().encode(), headers) if signer else headers

    def magic_link(self, address):
        account_id = uuid.uuid4()
        return acc.MagicLinkRequested(
            **self.envelope(),
            account_id=account_id,
            email=self.vault.seal(account_id, address),
            name=self.vault.seal(account_id, "Ada"),
            link=base64.urlsafe_b64encode(b"x" * 80).decode(),
            link_expires_at=datetime.now(UTC) + timedelta(minutes=10),
        )

    def key_records(self):
        keys = self.vault.unpublished()
        self.vault.mark_published(keys)
        return key_records(KEYS, keys, KEYRING.others("accounts"))


@pytest.fixture
async def notifier():
    app = Notifier(env=store_env(StoreSettings(kind="memory"), "notifier"))
    broker = KafkaBroker()
    dead = []

    @broker.subscriber(DLQ)
    async def capture(message: KafkaMessage) -> None:
        dead.append(message.raw_message)

    verifier = Verifier(KEYRING, owners(), "notifier")
    inbox = Inbox(
        service="notifier",
        name="notifier.inbox",
        app=app,
        broker=broker,
        topics=[EVENTS],
        catalog=Catalog(ALL_EVENTS),
        handlers=HANDLERS,
        dead_letter_topic=DLQ,
        verifier=verifier,
        key_patience_seconds=0.5,
    )
    keys = SubjectKeyReceiver(
        name="notifier.subject-keys",
        vault=app.vault,
        broker=broker,
        topics=[KEYS, BOOKING_KEYS],
        dead_letter_topic=DLQ,
        verifier=verifier,
        signer=NOTIFIER,
    )
    async with TestKafkaBroker(broker):
        yield app, inbox, keys, dead


def reasons(dead):
    return [dict(r.headers)["dlq-reason"].decode() for r in dead]


def emails(app):
    return [n for n in app.recorder.select_notifications(start=1, limit=1000) if "Email" in n.topic]


def give_keys(keys, accounts, offset=0):
    wire = accounts.key_records()
    return keys.apply(
        [record(KEYS, offset + i, r.value, ACCOUNTS.sign(r.value, r.headers)) for i, r in enumerate(wire)]
    )


async def test_a_forged_staff_member_added_gives_the_attacker_no_staff_key(notifier):
    app, inbox, _, dead = notifier
    accounts = Accounts()
    secret = new_token()
    forged = acc.StaffMemberAdded(**accounts.envelope(), staff_id=uuid.uuid4(), key_hash=token_hash(secret))
    body = forged.model_dump_json().encode()
    unsigned = accounts.headers(forged, signer=None)
    self_signed = accounts.headers(forged, signer=ATTACKER)
    outcome = await inbox.apply([record(EVENTS, 0, body, unsigned), record(EVENTS, 1, body, self_signed)])
    assert outcome.applied == 0 and outcome.dead_lettered == 2
    assert reasons(dead) == ["unsigned", "unknown_signing_key"]
    assert app.staff_key(forged.staff_id) is None
    refused = metrics.refused.labels("notifier.inbox", "unsigned")._value.get()
    assert refused >= 1


async def test_a_forged_email_verified_signed_by_another_service_is_not_believed(notifier):
    app, inbox, keys, dead = notifier
    accounts = Accounts()
    account_id = uuid.uuid4()
    verified = acc.EmailVerified(
        **accounts.envelope(),
        account_id=account_id,
        email=accounts.vault.seal(account_id, "attacker@example.com"),
        name=accounts.vault.seal(account_id, "Mallory"),
        first_time=True,
    )
    assert give_keys(keys, accounts) == []
    # Bookings' genuine key, on a topic only accounts may write, naming accounts as the source.
    headers = accounts.headers(verified, signer=BOOKINGS)
    outcome = await inbox.apply([record(EVENTS, 0, verified.model_dump_json().encode(), headers)])
    assert outcome.applied == 0 and reasons(dead) == ["not_from_owner"]
    assert emails(app) == []  # no welcome email


async def test_a_forged_magic_link_requested_sends_no_email_and_a_tampered_copy_neither(notifier):
    app, inbox, keys, dead = notifier
    accounts = Accounts()
    genuine = accounts.magic_link("ada@example.com")
    give_keys(keys, accounts)
    headers = accounts.headers(genuine)
    forged_link = genuine.model_copy(update={"link": base64.urlsafe_b64encode(b"evil" * 20).decode()})
    batch = [
        # The attacker's own link, in a copy of a genuine event's headers and signature.
        record(EVENTS, 0, forged_link.model_dump_json().encode(), headers),
        # A genuine event whose source-position header was changed (a signed header).
        record(EVENTS, 1, genuine.model_dump_json().encode(), {**headers, H_SOURCE_POSITION: "99"}),
        record(EVENTS, 2, genuine.model_dump_json().encode(), headers),  # the real one
    ]
    outcome = await inbox.apply(batch)
    assert reasons(dead) == ["bad_signature", "bad_signature"] and outcome.applied == 1
    assert len(emails(app)) == 1  # the genuine link only


async def test_a_forged_huge_source_position_does_not_silence_later_genuine_events(notifier):
    app, inbox, keys, dead = notifier
    accounts = Accounts()
    first, later = accounts.magic_link("ada@example.com"), accounts.magic_link("bea@example.com")
    give_keys(keys, accounts)
    poison_headers = {H_SOURCE: "accounts", H_SOURCE_POSITION: str(2**62)}
    poison = record(EVENTS, 0, first.model_dump_json().encode(), poison_headers)
    await inbox.apply([poison])
    assert reasons(dead) == ["unsigned"]
    assert app.position("notifier.inbox<accounts@accounts.events/0") is None  # nothing believed
    await inbox.apply([record(EVENTS, 1, later.model_dump_json().encode(), accounts.headers(later))])
    assert len(emails(app)) == 1  # before: skipped as a "duplicate" of position 2**62


async def test_an_erasure_counts_only_from_the_subject_owners_topic(notifier):
    app, _, keys, _ = notifier
    accounts = Accounts()
    subject = uuid.uuid4()
    sealed = accounts.vault.seal(subject, "ada@example.com")
    early = json.dumps(erasure_of(subject, "bookings")).encode()
    # Bookings erasing the subject before its owner's key even arrived: the key still wins.
    assert keys.apply([record(BOOKING_KEYS, 0, early, BOOKINGS.sign(early, {}))]) == []
    give_keys(keys, accounts)
    assert app.vault.open(sealed).value == "ada@example.com"
    erasure = json.dumps(erasure_of(subject, "bookings")).encode()
    as_accounts = json.dumps({**json.loads(erasure), "owner": "accounts"}).encode()
    dead_now = keys.apply(
        [
            # Bookings (genuinely signed, on its own topic) erasing a subject of accounts.
            record(BOOKING_KEYS, 0, erasure, BOOKINGS.sign(erasure, {})),
            # Bookings, on its topic, claiming to speak for accounts.
            record(BOOKING_KEYS, 1, as_accounts, BOOKINGS.sign(as_accounts, {})),
            # Anyone, unsigned, on accounts' own topic.
            record(KEYS, 5, as_accounts, {}),
            # Anyone, with a key nobody trusts, on accounts' own topic.
            record(KEYS, 6, as_accounts, ATTACKER.sign(as_accounts, {})),
        ]
    )
    assert [d.reason for d in dead_now] == ["not_from_owner", "unsigned", "unknown_signing_key"]
    assert app.vault.open(sealed).value == "ada@example.com"  # still there
    # The owner's own erasure does erase.
    accounts.vault.erase(subject)
    assert give_keys(keys, accounts, offset=7) == []
    assert app.vault.open(sealed).value is None


def test_reading_a_keys_topic_reveals_no_subject_key():
    accounts = Accounts()
    subject = uuid.uuid4()
    sealed = accounts.vault.seal(subject, "ada@example.com")
    plain = accounts.vault.unpublished()[0].key
    [wire] = accounts.key_records()
    assert plain not in wire.value.decode() and base64.b64decode(plain) not in wire.value
    # Only the consumers' private keys open their copy; an eavesdropper's key opens nothing.
    reader = Vault("sqlite+pysqlite:///:memory:", "notifier")
    receiver = SubjectKeyReceiver(
        name="eavesdropper",
        vault=reader,
        broker=KafkaBroker(),
        topics=[KEYS],
        dead_letter_topic=DLQ,
        verifier=Verifier(KEYRING, owners(), "notifier"),
        signer=ATTACKER,
    )
    [refused] = receiver.apply([record(KEYS, 0, wire.value, ACCOUNTS.sign(wire.value, wire.headers))])
    assert refused.reason == "not_sealed_for_us"
    receiver.signer = NOTIFIER
    assert receiver.apply([record(KEYS, 0, wire.value, ACCOUNTS.sign(wire.value, wire.headers))]) == []
    assert reader.open(sealed).value == "ada@example.com"


async def test_a_message_whose_subject_key_never_comes_is_dead_lettered_not_retried_forever(notifier):
    app, inbox, _, dead = notifier
    accounts = Accounts()
    orphan = accounts.magic_link("ada@example.com")  # its key is never published
    stuck = record(EVENTS, 0, orphan.model_dump_json().encode(), accounts.headers(orphan))
    with pytest.raises(Exception, match="no key for subject"):
        await inbox.apply([stuck])  # waits a while: the key is normally on its way
    await asyncio.sleep(0.6)  # key_patience_seconds
    outcome = await inbox.apply([stuck])
    assert outcome.dead_lettered == 1 and reasons(dead) == ["unknown_subject"]
    assert metrics.unknown_subjects.labels("notifier.inbox")._value.get() >= 1
    assert app.position("notifier.inbox@accounts.events/0") == 1  # the partition flows on


def test_a_service_without_its_bus_key_does_not_start(tmp_path, monkeypatch):
    from services.notifier.bootstrap import bootstrap
    from services.notifier.settings import NotifierSettings

    paths = key_settings(tmp_path / "bus", "notifier")
    paths["bus_key_file"].unlink()
    settings = NotifierSettings(store="memory", data_dir=tmp_path, **paths)
    with pytest.raises(KeyFileMissing, match=r"BUS_KEY_FILE.*missing.*deploy\.keys"):
        bootstrap(settings)
    with pytest.raises(KeyFileMissing, match="BUS_KEY_FILE and BUS_TRUSTED_KEYS_DIR must be set"):
        bootstrap(NotifierSettings(store="memory", data_dir=tmp_path))
