"""The tracking consumer, in memory: one scenario per guarantee.

Records are built by hand (the in-memory Kafka of faststream gives every record offset 0),
the event store is eventsourcing's POPO store, dead letters go through faststream's
TestKafkaBroker. The same guarantees are proven against a real broker in tests/integration.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.structs import ConsumerRecord
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage

from backbone.bus import H_SOURCE, H_SOURCE_POSITION
from backbone.commands import CommandReceipt
from backbone.eventstore import store_env
from backbone.inbox import Inbox
from backbone.personal import UnknownSubject, Vault
from backbone.settings import StoreSettings
from contracts.catalog import ALL_COMMANDS, ALL_EVENTS, Catalog
from services.bookings.application import Bookings
from services.bookings.customers import CustomerAccount
from services.bookings.domainmodel import Booking
from services.bookings.handlers import HANDLERS

CMDS, EVENTS, DLQ = "bookings.commands", "accounts.events", "bookings.dead-letters"


def record(topic, partition, offset, value, headers=()):
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return ConsumerRecord(
        topic,
        partition,
        offset,
        0,
        0,
        b"k",
        raw,
        None,
        1,
        len(raw),
        tuple((k, v.encode()) for k, v in headers),
    )


def place_booking(booking_id=None, command_id=None, **overrides):
    start = datetime.now(UTC) + timedelta(days=10)
    body = {
        "command_type": "PlaceBooking",
        "schema_version": 1,
        "command_id": str(command_id or uuid.uuid4()),
        "issued_at": datetime.now(UTC).isoformat(),
        "issued_by": "storefront",
        "tenant_id": "acme",
        "correlation_id": str(uuid.uuid4()),
        "booking_id": str(booking_id or uuid.uuid4()),
        "booking_code": "ABC-123",
        "customer": {"email": "jo@example.com", "name": "Jo"},
        "lines": [
            {
                "kind": "item",
                "ref": "kayak",
                "name": "Kayak",
                "starts_at": start.isoformat(),
                "ends_at": (start + timedelta(hours=2)).isoformat(),
                "unit_price": "30.00",
            }
        ],
        "currency": "EUR",
    }
    body.update(overrides)
    return body


ACCOUNTS_VAULT = Vault("sqlite+pysqlite:///:memory:", "accounts")


def account_claimed(account_id, event_id=None):
    def sealed(text):
        return ACCOUNTS_VAULT.seal(account_id, text).model_dump(mode="json")

    return {
        "event_type": "AccountClaimed",
        "schema_version": 2,
        "event_id": str(event_id or uuid.uuid4()),
        "occurred_at": datetime.now(UTC).isoformat(),
        "tenant_id": "acme",
        "correlation_id": str(uuid.uuid4()),
        "account_id": str(account_id),
        "email": sealed("jo@example.com"),
        "name": sealed("Jo"),
        "claimed_by": "customer",
        "link": "A" * 40,
        "link_expires_at": datetime.now(UTC).isoformat(),
    }


def hand_over_keys(app):
    """What the keys topic does between services: the owner's keys reach the consumer."""
    for record in ACCOUNTS_VAULT.unpublished():
        app.vault.accept(record)


@pytest.fixture
async def harness():
    app = Bookings(env=store_env(StoreSettings(kind="memory"), "bookings"))
    broker = KafkaBroker()
    dead = []

    @broker.subscriber(DLQ)
    async def capture(message: KafkaMessage) -> None:
        dead.append(message.raw_message)

    def make_inbox():
        return Inbox(
            service="bookings",
            name="bookings.inbox",
            app=app,
            broker=broker,
            topics=[CMDS, EVENTS],
            catalog=Catalog((*ALL_COMMANDS, *ALL_EVENTS)),
            handlers=HANDLERS,
            dead_letter_topic=DLQ,
        )

    inbox = make_inbox()
    async with TestKafkaBroker(broker):
        yield app, inbox, dead, make_inbox


def outcomes(app):
    return [n for n in app.recorder.select_notifications(start=1, limit=1000) if "CommandReceipt" in n.topic]


async def test_a_command_is_applied_once_however_often_it_comes(harness):
    app, inbox, _, _ = harness
    command = place_booking()
    await inbox.apply([record(CMDS, 0, 0, command)])
    booking = app.repository.get(uuid.UUID(command["booking_id"]))
    assert isinstance(booking, Booking) and booking.total == 30

    # Kafka redelivers the same record (a crash before its offset commit): skipped.
    await inbox.apply([record(CMDS, 0, 0, command)])
    assert len(outcomes(app)) == 1

    # The publisher sends the same command twice more (new offsets): one effect, same answers.
    await inbox.apply([record(CMDS, 0, 1, command), record(CMDS, 0, 2, command)])
    assert app.repository.get(booking.id).version == 1
    answers = [app.mapper.to_domain_event(n).outcome for n in outcomes(app)]
    assert len(answers) == 3 and all(a == answers[0] for a in answers)
    assert answers[0]["outcome"] == "accepted" and answers[0]["aggregate_version"] == 1


async def test_a_reused_command_id_with_another_body_is_rejected(harness):
    app, inbox, _, _ = harness
    command_id = uuid.uuid4()
    await inbox.apply(
        [
            record(CMDS, 0, 0, place_booking(command_id=command_id)),
            record(CMDS, 0, 1, place_booking(command_id=command_id)),
        ]
    )
    answers = [app.mapper.to_domain_event(n).outcome for n in outcomes(app)]
    assert [a["outcome"] for a in answers] == ["accepted", "rejected"]
    assert answers[1]["reason_code"] == "command_id_reused"


async def test_a_business_rejection_changes_nothing_but_is_answered(harness):
    app, inbox, _, _ = harness
    booking_id = uuid.uuid4()
    await inbox.apply(
        [record(CMDS, 1, 0, place_booking(booking_id)), record(CMDS, 1, 1, place_booking(booking_id))]
    )
    answers = [app.mapper.to_domain_event(n).outcome for n in outcomes(app)]
    assert answers[1]["reason_code"] == "booking_exists" and answers[1]["final"] is True
    assert app.repository.get(booking_id).version == 1


async def test_an_upstream_copy_at_a_new_offset_is_dropped(harness):
    app, inbox, _, _ = harness
    account_id, event_id = uuid.uuid4(), uuid.uuid4()
    upstream = [(H_SOURCE, "accounts"), (H_SOURCE_POSITION, "7")]
    claimed = account_claimed(account_id, event_id)
    hand_over_keys(app)
    await inbox.apply([record(EVENTS, 2, 0, claimed, upstream)])
    before = app.recorder.max_notification_id()
    # The accounts relay crashed after publishing and sent the same event again, at offset 1.
    await inbox.apply([record(EVENTS, 2, 1, claimed, upstream)])
    assert app.recorder.max_notification_id() == before
    assert app.position("bookings.inbox@accounts.events/2") == 2  # the offset moved on
    account = app.repository.get(CustomerAccount.create_id(account_id))
    assert account.email.value == "jo@example.com"


async def test_data_sealed_with_a_key_not_yet_received_waits_for_it(harness):
    app, inbox, dead, _ = harness
    account_id = uuid.uuid4()
    claimed = account_claimed(account_id)
    with pytest.raises(UnknownSubject):  # the batch fails as a whole; Kafka redelivers it
        await inbox.apply([record(EVENTS, 1, 0, claimed)])
    assert dead == [] and app.position("bookings.inbox@accounts.events/1") is None
    hand_over_keys(app)
    await inbox.apply([record(EVENTS, 1, 0, claimed)])
    assert app.repository.get(CustomerAccount.create_id(account_id)).email.value == "jo@example.com"


async def test_an_erased_subject_reads_as_erased_in_the_store(harness):
    app, inbox, _, _ = harness
    command = place_booking()
    await inbox.apply([record(CMDS, 0, 0, command)])
    booking_id = uuid.UUID(command["booking_id"])
    assert app.repository.get(booking_id).email == "jo@example.com"
    # The raw stored event holds ciphertext, not the address.
    stored = app.recorder.select_notifications(start=1, limit=10)
    assert all(b"jo@example.com" not in n.state for n in stored)
    app.erase_subject(booking_id)
    booking = app.repository.get(booking_id)
    assert booking.email is None and str(booking.customer["name"]) == "[erased]"
    assert booking.total == 30  # the books keep their amounts


async def test_poison_goes_to_the_dead_letters_and_the_partition_flows_on(harness):
    app, inbox, dead, _ = harness
    good = place_booking()
    invalid = place_booking(currency="euro")
    await inbox.apply(
        [
            record(CMDS, 0, 0, b"{this is not json"),
            record(CMDS, 0, 1, invalid),
            record(CMDS, 0, 2, good),
        ]
    )
    reasons = [dict(r.headers)["dlq-reason"].decode() for r in dead]
    assert reasons == ["malformed_json", "schema_invalid"]
    assert dict(dead[1].headers)["dlq-original-offset"] == b"1"
    assert app.repository.get(uuid.UUID(good["booking_id"])).version == 1
    # The invalid command still got an answer, marked not final: it may be corrected and resent.
    receipt = app.repository.get(CommandReceipt.create_id(uuid.UUID(invalid["command_id"])))
    assert receipt.outcome["reason_code"] == "schema_invalid" and not receipt.is_final
    assert app.position("bookings.inbox@bookings.commands/0") == 3


async def test_a_failing_handler_leaves_no_partial_change(harness, monkeypatch):
    app, inbox, dead, _ = harness
    first = place_booking()

    def explode(command, uow):
        booking = uow.get(Booking, uuid.UUID(first["booking_id"]))
        booking.record_cancellation(
            status_before="PEND", refund_due=0, reason=None, cancelled_at=datetime.now(UTC)
        )
        raise KeyError("a bug after a change")

    await inbox.apply([record(CMDS, 0, 0, first)])
    from contracts.bookings import PlaceBooking

    monkeypatch.setitem(inbox.handlers, PlaceBooking, lambda c, uow: explode(c, uow))
    await inbox.apply([record(CMDS, 0, 1, place_booking())])
    assert app.repository.get(uuid.UUID(first["booking_id"])).status == "PEND"
    assert [dict(r.headers)["dlq-reason"] for r in dead] == [b"handler_failed"]


async def test_a_consumer_that_lost_its_partition_writes_nothing(harness):
    app, inbox, _, make_inbox = harness
    other = make_inbox()  # the instance the partition went to, after a rebalance
    await other.apply([record(CMDS, 0, 0, place_booking())])
    late = place_booking()
    inbox._next[(CMDS, 0)] = 0  # the stale instance still believes it is at offset 0
    await inbox.apply([record(CMDS, 0, 0, late)])
    assert app.position("bookings.inbox@bookings.commands/0") == 1
    from eventsourcing.application import AggregateNotFoundError

    with pytest.raises(AggregateNotFoundError):
        app.repository.get(uuid.UUID(late["booking_id"]))


async def test_a_stale_batch_that_ends_past_the_new_owners_position_is_not_stored(harness):
    """The fence: the new owner stored position 1; a stale consumer's batch of offsets 0-2
    (started at 0) would end at 3, above it, yet must change nothing."""
    app, inbox, _, make_inbox = harness
    other = make_inbox()  # the instance the partition went to, after a rebalance
    first = place_booking()
    await other.apply([record(CMDS, 0, 0, first)])
    stale = [place_booking() for _ in range(3)]
    inbox._next[(CMDS, 0)] = 0  # the stale instance still believes it is at offset 0
    outcome = await inbox.apply([record(CMDS, 0, offset, body) for offset, body in enumerate(stale)])
    assert not outcome.stored
    assert app.position("bookings.inbox@bookings.commands/0") == 1
    from eventsourcing.application import AggregateNotFoundError

    for body in stale:
        with pytest.raises(AggregateNotFoundError):
            app.repository.get(uuid.UUID(body["booking_id"]))
    # Back on the stored position, it applies what follows offset 0, once.
    outcome = await inbox.apply([record(CMDS, 0, offset, body) for offset, body in enumerate(stale)])
    assert outcome.stored and (outcome.redelivered, outcome.applied) == (1, 2)
    assert app.position("bookings.inbox@bookings.commands/0") == 3


# ---------------------------------------------------------------- outages are not bad messages


async def test_a_database_outage_in_a_handler_stalls_the_batch_not_dead_letters(harness, monkeypatch):
    # What a PostgreSQL restart looks like from the vault or a read model: SQLAlchemy's
    # OperationalError, which is neither a PersistenceError nor an OSError.
    import sqlalchemy.exc

    app, inbox, dead, _ = harness
    from contracts.bookings import PlaceBooking

    def outage(command, uow):
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("connection failed"))

    monkeypatch.setitem(inbox.handlers, PlaceBooking, outage)
    command = place_booking()
    with pytest.raises(sqlalchemy.exc.OperationalError):
        await inbox.apply([record(CMDS, 0, 0, command)])
    assert dead == [] and app.position("bookings.inbox@bookings.commands/0") is None

    monkeypatch.undo()  # the database is back: the same record is applied, once
    await inbox.apply([record(CMDS, 0, 0, command)])
    assert app.repository.get(uuid.UUID(command["booking_id"])).version == 1 and dead == []


async def test_any_failure_while_a_store_does_not_answer_is_an_outage(harness, monkeypatch):
    # A failure of an unknown type (a driver wrapping it, a handler re-raising it) is asked
    # about: the probe finds the vault down, so the message is not blamed.
    from backbone.faults import StoreUnavailable
    from contracts.bookings import PlaceBooking

    app, inbox, dead, _ = harness
    vault_down = True

    def ping():
        if vault_down:
            raise ConnectionRefusedError("vault down")

    app.add_probe("vault", ping)

    def confused(command, uow):
        raise RuntimeError("something went wrong somewhere below")

    monkeypatch.setitem(inbox.handlers, PlaceBooking, confused)
    with pytest.raises(StoreUnavailable, match="vault"):
        await inbox.apply([record(CMDS, 0, 0, place_booking())])
    assert dead == []

    # The same failure with every store answering is the message's own: dead-lettered.
    vault_down = False
    await inbox.apply([record(CMDS, 0, 0, place_booking())])
    assert [dict(r.headers)["dlq-reason"] for r in dead] == [b"handler_failed"]
    assert app.position("bookings.inbox@bookings.commands/0") == 1


# ---------------------------------------------------------------- races are not bad messages


def _shared_table(tmp_path):
    """A table other instances write too, with a unique key (like the vault's subject keys)."""
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite+pysqlite:///{tmp_path / 'shared.db'}")
    table = sa.Table("keys", sa.MetaData(), sa.Column("subject", sa.String, primary_key=True))
    table.metadata.create_all(engine)
    return engine, table


async def test_a_handler_that_lost_a_race_on_a_unique_key_is_applied_again_not_dead_lettered(
    harness, monkeypatch, tmp_path
):
    import sqlalchemy as sa
    import sqlalchemy.exc

    from contracts.bookings import PlaceBooking

    app, inbox, dead, _ = harness
    engine, table = _shared_table(tmp_path)
    placed = inbox.handlers[PlaceBooking]
    raced = []

    def first_use_of_a_key(command, uow):
        # Read, then insert what was not there: between the two, another instance inserts the
        # same key (once). The second attempt reads its row and goes on.
        with engine.begin() as conn:
            found = conn.execute(sa.select(table).where(table.c.subject == "staff")).first()
            if found is None:
                if not raced:
                    raced.append(True)
                    with engine.begin() as other:
                        other.execute(table.insert().values(subject="staff"))
                conn.execute(table.insert().values(subject="staff"))
        placed(command, uow)

    monkeypatch.setitem(inbox.handlers, PlaceBooking, first_use_of_a_key)
    command = place_booking()
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        await inbox.apply([record(CMDS, 0, 0, command)])
    assert dead == [] and app.position("bookings.inbox@bookings.commands/0") is None

    outcome = await inbox.apply([record(CMDS, 0, 0, command)])  # the consumer's retry
    assert outcome.stored and outcome.applied == 1 and dead == []
    assert app.repository.get(uuid.UUID(command["booking_id"])).version == 1


async def test_a_record_that_conflicts_on_every_attempt_is_dead_lettered_on_the_third(
    harness, monkeypatch, tmp_path
):
    import sqlalchemy.exc

    from backbone.inbox import CONFLICT_ATTEMPTS
    from contracts.bookings import PlaceBooking

    app, inbox, dead, _ = harness
    engine, table = _shared_table(tmp_path)
    with engine.begin() as conn:
        conn.execute(table.insert().values(subject="taken"))

    def always_the_same_key(command, uow):
        with engine.begin() as conn:  # a bug: inserts a key it never reads first
            conn.execute(table.insert().values(subject="taken"))

    monkeypatch.setitem(inbox.handlers, PlaceBooking, always_the_same_key)
    command = place_booking()
    for _ in range(CONFLICT_ATTEMPTS - 1):
        with pytest.raises(sqlalchemy.exc.IntegrityError):
            await inbox.apply([record(CMDS, 0, 0, command)])
        assert dead == []
    outcome = await inbox.apply([record(CMDS, 0, 0, command)])
    assert outcome.stored and [dict(r.headers)["dlq-reason"] for r in dead] == [b"handler_failed"]
    assert app.position("bookings.inbox@bookings.commands/0") == 1
    receipt = app.repository.get(CommandReceipt.create_id(uuid.UUID(command["command_id"])))
    assert receipt.outcome["reason_code"] == "internal_error"
