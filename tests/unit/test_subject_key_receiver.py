"""Subject keys and erasures from the keys topics, in memory: who hears of an erasure."""

from __future__ import annotations

import uuid

from aiokafka.structs import ConsumerRecord
from faststream.kafka import KafkaBroker

from backbone.personal import Vault
from backbone.readmodel import ReadModel
from backbone.signing import Keyring, Signer, TrustedKey, Verifier
from backbone.subjectkeys import SubjectKeyReceiver, key_records
from contracts.topics import owners
from services.notifier import views

ACCOUNTS, NOTIFIER = Signer.generate("accounts"), Signer.generate("notifier")
KEYRING = Keyring([TrustedKey(s.identity, s.key_id, s.public_key) for s in (ACCOUNTS, NOTIFIER)])
VERIFIER = Verifier(KEYRING, owners(), "notifier")


def record(offset: int, value: bytes) -> ConsumerRecord:
    headers = tuple((k, v.encode()) for k, v in ACCOUNTS.sign(value, {}).items())
    return ConsumerRecord("accounts.subject-keys", 0, offset, 0, 0, b"k", value, None, 1, len(value), headers)


def sealed(keys):
    """As the accounts relay publishes them: sealed for the notifier."""
    return [r.value for r in key_records("accounts.subject-keys", keys, KEYRING.others("accounts"))]


def test_erasures_are_handed_on_after_the_vault_dropped_the_keys_and_malformed_records_are_dead():
    owner = Vault("sqlite+pysqlite:///:memory:", "accounts")
    kept, erased = uuid.uuid4(), uuid.uuid4()
    owner.key_for(kept)
    owner.key_for(erased)
    keys = owner.unpublished()
    owner.mark_published(keys)
    owner.erase(erased)
    [erasure] = owner.unpublished()
    ours = Vault("sqlite+pysqlite:///:memory:", "notifier")
    heard = []

    def on_erased(subject_ids):
        assert all(ours.key(s) is None for s in subject_ids)  # already gone from the vault
        heard.append(subject_ids)

    receiver = SubjectKeyReceiver(
        name="notifier.subject-keys",
        vault=ours,
        broker=KafkaBroker(),
        topics=["accounts.subject-keys"],
        dead_letter_topic="notifier.dead-letters",
        verifier=VERIFIER,
        signer=NOTIFIER,
        on_erased=on_erased,
    )
    records = [record(i, value) for i, value in enumerate(sealed(keys))]
    assert receiver.apply(records) == [] and heard == []
    dead = receiver.apply([record(2, sealed([erasure])[0]), record(3, b"{not json")])
    assert heard == [[erased]] and [d.reason for d in dead] == ["schema_invalid"]
    assert ours.key(kept) is not None and ours.key(erased) is None


def test_a_second_read_model_on_the_same_tables_shares_them():
    first = ReadModel("sqlite+pysqlite:///:memory:", views.metadata)
    second = ReadModel("sqlite+pysqlite:///:memory:", views.metadata)
    assert first.positions is second.positions
