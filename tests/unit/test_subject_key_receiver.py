"""Subject keys and erasures from the keys topics, in memory: who hears of an erasure."""

from __future__ import annotations

import uuid

from aiokafka.structs import ConsumerRecord
from faststream.kafka import KafkaBroker

from backbone.personal import Vault
from backbone.readmodel import ReadModel
from backbone.subjectkeys import SubjectKeyReceiver
from services.notifier import views


def record(offset: int, value: bytes) -> ConsumerRecord:
    return ConsumerRecord("accounts.subject-keys", 0, offset, 0, 0, b"k", value, None, 1, len(value), ())


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
        on_erased=on_erased,
    )
    records = [record(i, k.model_dump_json().encode()) for i, k in enumerate(keys)]
    assert receiver.apply(records) == [] and heard == []
    dead = receiver.apply([record(2, erasure.model_dump_json().encode()), record(3, b"{not json")])
    assert heard == [[erased]] and [d.reason for d in dead] == ["schema_invalid"]
    assert ours.key(kept) is not None and ours.key(erased) is None


def test_a_second_read_model_on_the_same_tables_shares_them():
    first = ReadModel("sqlite+pysqlite:///:memory:", views.metadata)
    second = ReadModel("sqlite+pysqlite:///:memory:", views.metadata)
    assert first.positions is second.positions
