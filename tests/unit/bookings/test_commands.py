"""The command contract of the bookings service, in memory: every command applied once and
answered, every refusal with its reason code, the statuses following the amounts."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest

from backbone.blindindex import BlindIndex
from backbone.follower import read_log
from contracts import bookings as contract
from contracts.personal import Sealed
from services.bookings import views
from services.bookings.domainmodel import Booking
from services.bookings.integration import translator
from tests.support.bookings import command, line, pay, place
from tests.unit.bookings.conftest import TENANT


def in_a_week(harness):
    return harness.now + timedelta(days=7)


async def placed(harness, **fields):
    body = place(TENANT, "ada@example.com", starts_at=in_a_week(harness), **fields)
    await harness.send(body)
    assert harness.outcome(body)["outcome"] == "accepted", harness.outcome(body)
    return uuid.UUID(body["booking_id"])


async def test_a_booking_lives_through_payments_changes_and_a_staff_cancellation(harness):
    booking_id = await placed(harness)

    await harness.send(pay(TENANT, booking_id, "30.00"))
    assert harness.booking(booking_id).status == "PART"  # a deposit: follows from the amounts
    await harness.send(pay(TENANT, booking_id, "75.00"))
    booking = harness.booking(booking_id)
    assert (booking.status, booking.amount_paid, booking.balance_due) == ("PAID", 105, 0)

    # One more lunch: the total grows, PAID is no longer true, the status follows.
    lines = [line("Kayak for two", in_a_week(harness), "80.00", hours=3)]
    lines.append(line("Picnic lunch", in_a_week(harness), "12.50", 3, 1, "product"))
    modify = command("ModifyBooking", TENANT, booking_id, lines=lines, override_customer_rules=True)
    await harness.send(modify)
    booking = harness.booking(booking_id)
    assert (booking.total, booking.status, booking.balance_due) == (
        Decimal("117.50"),
        "PART",
        Decimal("12.50"),
    )
    assert harness.outcome(modify)["aggregate_version"] == booking.version

    # Staff cancel: the tenant lets no customer cancel online, so only an explicit override does.
    strict = command("CancelBooking", TENANT, booking_id, reason="storm")
    await harness.send(strict)
    assert harness.outcome(strict)["reason_code"] == "setting_off"
    cancel = command(
        "CancelBooking",
        TENANT,
        booking_id,
        reason="storm",
        override_customer_rules=True,
        on_behalf_of={"kind": "staff", "id": "anna"},
    )
    await harness.send(cancel)
    booking = harness.booking(booking_id)
    assert booking.status == "STOP" and booking.amount_paid == 105  # no money moved
    cancelled = harness.events(booking_id)[-1]
    assert isinstance(cancelled, Booking.Cancelled)
    assert cancelled.refund_due == 105 and cancelled.rules_overridden and cancelled.status_before == "PART"
    assert cancelled.meta["actor"] == "staff:anna"

    # Nothing more changes a cancelled booking.
    for late in (
        pay(TENANT, booking_id, "5.00"),
        command("ChangeBookingStatus", TENANT, booking_id, status="HOLD"),
    ):
        await harness.send(late)
        assert harness.outcome(late)["reason_code"] == "booking_closed"


@pytest.mark.parametrize(
    "make",
    [
        lambda b: pay(TENANT, b, "30.00"),
        lambda b: command("ChangeBookingStatus", TENANT, b, status="HOLD", reason="confirmed"),
        lambda b: command(
            "ModifyBooking", TENANT, b, customer={"name": "Ada L."}, override_customer_rules=True
        ),
        lambda b: command("CancelBooking", TENANT, b, override_customer_rules=True, refund_due="0.00"),
        lambda b: command("VoidBooking", TENANT, b, reason="test booking"),
    ],
    ids=["RecordPayment", "ChangeBookingStatus", "ModifyBooking", "CancelBooking", "VoidBooking"],
)
async def test_the_same_command_three_times_has_one_effect_and_three_identical_answers(harness, make):
    booking_id = await placed(harness)
    body = make(booking_id)
    await harness.send(body)
    after_one = harness.events(booking_id)
    await harness.send(body)
    await harness.send({**body, "issued_at": "2031-01-01T00:00:00+00:00"})  # restamped retry
    answers = harness.outcomes(body)
    assert len(answers) == 3 and answers[0] == answers[1] == answers[2]
    assert answers[0]["outcome"] == "accepted" and answers[0]["aggregate_version"] == len(after_one)
    assert len(harness.events(booking_id)) == len(after_one) > 1  # one effect


async def test_custom_statuses_are_defined_by_command_with_their_inventory_lock(harness):
    booking_id = await placed(harness)
    unknown = command("ChangeBookingStatus", TENANT, booking_id, status="POSTPONED")
    await harness.send(unknown)
    assert harness.outcome(unknown)["reason_code"] == "unknown_status"

    define = command(
        "DefineCustomStatus", TENANT, status="POSTPONED", label="Postponed", locks_inventory=False
    )
    await harness.send(define, define)
    assert [o["outcome"] for o in harness.outcomes(define)] == ["accepted", "accepted"]
    again = {**unknown, "command_id": str(uuid.uuid4())}
    await harness.send(again)
    assert harness.booking(booking_id).status == "POSTPONED"
    changed = harness.events(booking_id)[-1]
    assert changed.locks_inventory is False and changed.status_before == "PEND"

    system = command("DefineCustomStatus", TENANT, status="PAID", label="Mine", locks_inventory=True)
    await harness.send(system)
    assert harness.outcome(system)["reason_code"] == "reserved_status"

    # Retired: nobody enters it any more; a booking in it can still leave.
    await harness.send(command("RetireCustomStatus", TENANT, status="POSTPONED"))
    other = await placed(harness)
    refused = command("ChangeBookingStatus", TENANT, other, status="POSTPONED")
    await harness.send(refused)
    assert harness.outcome(refused)["reason_code"] == "unknown_status"
    leave = command("ChangeBookingStatus", TENANT, booking_id, status="HOLD")
    await harness.send(leave)
    assert harness.booking(booking_id).status == "HOLD"


@pytest.mark.parametrize(
    ("status", "code"),
    [("PAID", "status_follows_payments"), ("PART", "status_follows_payments"), ("STOP", "use_cancel")],
)
async def test_statuses_that_follow_from_facts_cannot_be_set(harness, status, code):
    booking_id = await placed(harness)
    body = command("ChangeBookingStatus", TENANT, booking_id, status=status)
    await harness.send(body)
    assert harness.outcome(body)["reason_code"] == code and harness.outcome(body)["final"] is True
    assert harness.booking(booking_id).version == 1


async def test_void_only_without_payments(harness):
    paid = await placed(harness, status="PART", paid="10.00")
    refused = command("VoidBooking", TENANT, paid)
    await harness.send(refused)
    assert harness.outcome(refused)["reason_code"] == "void_with_payments"
    unpaid = await placed(harness)
    await harness.send(command("VoidBooking", TENANT, unpaid, reason="test"))
    assert harness.booking(unpaid).status == "VOID"


async def test_a_payment_counts_once_even_under_two_command_ids(harness):
    booking_id = await placed(harness)
    first = pay(TENANT, booking_id, "30.00", payment_id="psp-1")
    second = {**first, "command_id": str(uuid.uuid4())}
    other_amount = {**first, "command_id": str(uuid.uuid4()), "amount": "31.00"}
    wrong_currency = pay(TENANT, booking_id, "1.00") | {"currency": "USD"}
    await harness.send(first, second, other_amount, wrong_currency)
    assert harness.booking(booking_id).amount_paid == 30
    assert harness.outcome(second)["outcome"] == "accepted"
    assert harness.outcome(other_amount)["reason_code"] == "payment_already_recorded"
    assert harness.outcome(wrong_currency)["reason_code"] == "currency_mismatch"


async def test_a_command_for_a_booking_not_placed_yet_may_be_sent_again(harness):
    booking_id = uuid.uuid4()
    early = pay(TENANT, booking_id, "30.00")
    await harness.send(early)
    assert harness.outcome(early)["reason_code"] == "booking_not_found"
    assert harness.outcome(early)["final"] is False
    await harness.send(
        place(TENANT, "ada@example.com", booking_id=booking_id, starts_at=in_a_week(harness)), early
    )
    assert harness.outcome(early)["outcome"] == "accepted"
    assert harness.booking(booking_id).amount_paid == 30

    elsewhere = pay("another-tenant", booking_id, "1.00")
    await harness.send(elsewhere)
    assert harness.outcome(elsewhere)["reason_code"] == "booking_not_found"


async def test_a_tenant_that_requires_a_login_takes_bookings_only_for_verified_accounts(harness):
    await harness.hear(harness.accounts.settings(require_login_to_book=True))
    guest = place(TENANT, "guest@example.com", starts_at=in_a_week(harness))
    stranger = place(TENANT, "x@example.com", starts_at=in_a_week(harness), account_id=uuid.uuid4())
    await harness.send(guest, stranger)
    assert harness.outcome(guest)["reason_code"] == "login_required"
    assert harness.outcome(stranger)["reason_code"] == "account_not_verified"
    assert harness.outcome(stranger)["final"] is False  # the account's events may be on their way

    session = await harness.customer()
    member = place(TENANT, "ada@example.com", starts_at=in_a_week(harness), account_id=session.account_id)
    await harness.send(member)
    assert harness.outcome(member)["outcome"] == "accepted"

    await harness.hear(harness.accounts.archived(session.account_id))
    archived = place(TENANT, "ada@example.com", starts_at=in_a_week(harness), account_id=session.account_id)
    await harness.send(archived)
    assert harness.outcome(archived)["reason_code"] == "account_archived"


async def test_a_service_acting_for_a_customer_is_held_to_the_customer_rules(harness):
    await harness.hear(harness.accounts.settings(allow_cancel=True))
    session = await harness.customer("ada@example.com")
    mine = await placed(harness)  # made with Ada's verified email
    someone_else = uuid.uuid4()
    ada = {"kind": "customer", "id": str(session.account_id)}

    override = command("CancelBooking", TENANT, mine, on_behalf_of=ada, override_customer_rules=True)
    not_hers = command(
        "CancelBooking", TENANT, mine, on_behalf_of={"kind": "customer", "id": str(someone_else)}
    )
    email = command("ModifyBooking", TENANT, mine, on_behalf_of=ada, customer={"email": "eve@example.com"})
    await harness.send(override, not_hers, email)
    assert harness.outcome(override)["reason_code"] == "not_allowed_for_customer"
    assert harness.outcome(not_hers)["reason_code"] == "booking_not_found"
    assert harness.outcome(email)["reason_code"] == "not_allowed_for_customer"

    cancel = command("CancelBooking", TENANT, mine, on_behalf_of=ada, reason="ill")
    await harness.send(cancel)
    assert harness.outcome(cancel)["outcome"] == "accepted"
    assert harness.events(mine)[-1].meta["actor"] == f"customer:{session.account_id}"


async def test_invalid_commands_are_answered_not_dropped(harness):
    booking_id = await placed(harness)
    negative = pay(TENANT, booking_id, "-5.00")
    wrong_start = place(TENANT, "ada@example.com", starts_at=in_a_week(harness), status="STOP")
    unpaid_paid = place(TENANT, "ada@example.com", starts_at=in_a_week(harness), status="PAID")
    await harness.send(negative, wrong_start, unpaid_paid)
    assert harness.outcome(negative)["reason_code"] == "schema_invalid"
    assert harness.outcome(negative)["final"] is False
    assert harness.outcome(wrong_start)["reason_code"] == "transition_not_allowed"
    assert harness.outcome(unpaid_paid)["reason_code"] == "status_follows_payments"
    assert [dict(r.headers)["dlq-reason"] for r in harness.dead] == [b"schema_invalid"]


async def test_every_change_is_published_as_its_contract_event(harness):
    booking_id = await placed(harness)
    define = command(
        "DefineCustomStatus", TENANT, status="POSTPONED", label="Postponed", locks_inventory=False
    )
    for body in (  # one batch each: within a batch, the log is ordered by aggregate
        pay(TENANT, booking_id, "20.00"),
        command(
            "ModifyBooking", TENANT, booking_id, form={"pickup": "Hotel Post"}, override_customer_rules=True
        ),
        define,
        command("ChangeBookingStatus", TENANT, booking_id, status="POSTPONED"),
        command("CancelBooking", TENANT, booking_id, override_customer_rules=True, refund_due="15.00"),
    ):
        await harness.send(body)
    void = await placed(harness)
    await harness.send(command("VoidBooking", TENANT, void))
    translate = translator(harness.app)
    published = [out.message for recorded in read_log(harness.app, 0, 1000) for out in translate(recorded)]
    events = [m for m in published if not isinstance(m, contract.CommandOutcome)]
    assert [type(m).__name__ for m in events] == [
        "BookingPlaced",
        "BookingPaymentRecorded",
        "BookingStatusChanged",  # PEND -> PART, after the payment
        "BookingModified",
        "CustomStatusDefined",
        "BookingStatusChanged",
        "BookingCancelled",
        "BookingPlaced",
        "BookingVoided",
    ]
    payment, part, modified, postponed, _, cancelled = events[1:7]
    assert (payment.amount_paid, payment.balance_due) == (20, 85)
    assert (part.status, part.cause, part.locks_inventory) == ("PART", "payment", True)
    assert modified.changes == ("Booking form answers changed.",) and modified.balance_due == 85
    assert (postponed.status, postponed.locks_inventory) == ("POSTPONED", False)
    assert (cancelled.status_before, cancelled.refund_due, cancelled.amount_paid) == ("POSTPONED", 15, 20)
    assert cancelled.rules_overridden is True and cancelled.cancelled_by.kind == "service"
    # Each message is valid against its committed contract (the same model decodes it back).
    for message in published:
        assert type(message).model_validate_json(message.model_dump_json()) == message


async def test_the_relay_derives_each_booking_event_from_the_state_it_kept_as_the_store_would(harness):
    # The relay keeps each booking as of the last event it translated (`BookingsAsRelayed`):
    # the messages must be those read from the store, event by event, and a relay that starts
    # mid-log, or skips a version, reads the store instead of guessing.
    booking_id = await placed(harness)
    await harness.send(pay(TENANT, booking_id, "20.00"))
    await harness.send(
        command(
            "ModifyBooking",
            TENANT,
            booking_id,
            lines=[line("Kayak", in_a_week(harness), "90.00")],
            override_customer_rules=True,
        )
    )
    await harness.send(pay(TENANT, booking_id, "70.00"))
    await harness.send(command("CancelBooking", TENANT, booking_id, override_customer_rules=True))
    log = read_log(harness.app, 0, 1000)

    def opened(value):  # sealed personal data differs each time it is sealed (a fresh nonce)
        if isinstance(value, dict) and "ciphertext" in value:
            return harness.app.vault.open(Sealed.model_validate(value)).value
        if isinstance(value, dict):
            return {k: opened(v) for k, v in value.items()}
        return [opened(v) for v in value] if isinstance(value, list) else value

    def messages(recorded, translate):
        return [opened(out.message.model_dump(mode="json")) for out in translate(recorded)]

    kept = translator(harness.app)
    following = [messages(r, kept) for r in log]
    from_store = [messages(r, translator(harness.app)) for r in log]  # a fresh relay each event
    assert following == from_store
    paid = [m for ms in following for m in ms if m["event_type"] == "BookingPaymentRecorded"]
    assert [(m["amount_paid"], m["balance_due"]) for m in paid] == [("20.00", "85.00"), ("90.00", "0.00")]
    assert following[0][0]["customer"]["email"] == "ada@example.com"

    skipping = translator(harness.app)  # sees the placement, then not the first payment
    bookings_events = [r for r in log if isinstance(r.event, Booking.Event)]
    assert messages(bookings_events[0], skipping) == following[log.index(bookings_events[0])]
    later = bookings_events[3:]
    assert [messages(r, skipping) for r in later] == [following[log.index(r)] for r in later]


async def test_staff_find_bookings_by_customer_words_placed_and_changed_in_one_projected_batch(harness):
    # The projection writes a new booking's search tokens with the batch (no DELETE first);
    # a change of the name in the same batch still replaces them, in order.
    ada = place(TENANT, "ada@example.com", starts_at=in_a_week(harness))
    grace = place(TENANT, "grace@example.com", starts_at=in_a_week(harness))
    rename = command(
        "ModifyBooking",
        TENANT,
        ada["booking_id"],
        customer={"name": "Ada King"},
        override_customer_rules=True,
    )
    await harness.send(ada, grace, rename)
    assert harness.outcome(rename)["outcome"] == "accepted", harness.outcome(rename)
    index = BlindIndex(harness.app.vault)

    def found(query):
        with harness.read_model.engine.connect() as conn:
            rows, _ = views.staff_bookings(
                conn, TENANT, customer=query, customer_tokens=index.query_tokens(TENANT, query)
            )
        return {row["booking_id"] for row in rows}

    assert found("ada king") == {ada["booking_id"]}
    assert found("grace") == {grace["booking_id"]}
    assert found("test customer") == {grace["booking_id"]}  # Ada's old name is gone
    assert found("example") == {ada["booking_id"], grace["booking_id"]}
