"""The life of one email, in memory: queued, attempts, backoff, parking, retry, withdrawal."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from backbone.personal import Personal
from services.notifier.directory import Customer, Tenant, UnknownBranding
from services.notifier.domainmodel import (
    CUSTOMER,
    PARKED,
    QUEUED,
    RETRYING,
    SENDING,
    SENT,
    WITHDRAWN,
    DeliveryPolicy,
    Email,
    NotParked,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
POLICY = DeliveryPolicy()


def email(erase: bool = False) -> Email:
    return Email(
        source_event_id=uuid.uuid4(),
        template="welcome",
        tenant_id="acme",
        audience=CUSTOMER,
        recipient=Personal(uuid.uuid4(), "jo@example.com"),
        language="en",
        data={"name": "Jo"},
        account_id=uuid.uuid4(),
        booking_id=None,
        erase_recipient_when_done=erase,
    )


def events_of(aggregate) -> list[str]:
    return [type(e).__name__ for e in aggregate.collect_events()]


def test_the_id_comes_from_the_event_and_the_kind_so_an_event_seen_twice_is_one_email():
    a, b = uuid.uuid4(), uuid.uuid4()
    assert Email.create_id(a, "welcome") == Email.create_id(a, "welcome")
    assert Email.create_id(a, "welcome") != Email.create_id(a, "magic_link")
    assert Email.create_id(a, "welcome") != Email.create_id(b, "welcome")
    e = email()
    assert e.id == Email.create_id(e.source_event_id, "welcome")
    assert e.message_id == f"<{e.id}@booking-accounts.notifier>"


def test_queued_then_sent():
    e = email()
    assert e.status == QUEUED and e.is_due(NOW)
    e.start_attempt(NOW, POLICY)
    assert e.status == SENDING and e.attempts == 1 and not e.is_due(NOW)
    e.mark_sent(1, "250 ok", "Welcome")
    assert e.status == SENT and not e.is_due(NOW + timedelta(days=1))
    assert events_of(e) == ["Queued", "AttemptStarted", "Sent"]


def test_temporary_failures_back_off_exponentially_up_to_a_cap_then_park():
    policy = DeliveryPolicy(retry_base=timedelta(seconds=30), retry_cap=timedelta(minutes=4), max_attempts=6)
    e = email()
    now = NOW
    delays = []
    for attempt in range(1, 6):
        e.start_attempt(now, policy)
        e.fail(attempt, "451 try later", False, now, policy)
        assert e.status == RETRYING and e.last_error == "451 try later"
        delays.append(e.next_attempt_at - now)
        assert not e.is_due(e.next_attempt_at - timedelta(seconds=1)) and e.is_due(e.next_attempt_at)
        now = e.next_attempt_at
    assert [d.total_seconds() for d in delays] == [30, 60, 120, 240, 240]
    e.start_attempt(now, policy)
    e.fail(6, "451 still", False, now, policy)
    assert e.status == PARKED and e.last_error == "451 still" and not e.is_due(now + timedelta(days=9))


def test_a_permanent_refusal_parks_at_once():
    e = email()
    e.start_attempt(NOW, POLICY)
    e.fail(1, "550 5.1.1 no such mailbox", True, NOW, POLICY)
    assert e.status == PARKED and e.attempts == 1 and "550" in e.last_error


def test_an_attempt_without_a_result_is_interrupted_and_due_again_once_its_lease_is_over():
    e = email()
    e.start_attempt(NOW, POLICY)
    assert not e.is_due(NOW + POLICY.lease - timedelta(seconds=1))  # another sender has it
    later = NOW + POLICY.lease
    assert e.is_due(later)
    e.start_attempt(later, POLICY)
    started = [ev for ev in e.collect_events() if type(ev).__name__ == "AttemptStarted"]
    assert [(s.attempt, s.interrupted) for s in started] == [(1, False), (2, True)]


def test_late_results_of_an_attempt_taken_over_change_nothing():
    e = email()
    e.start_attempt(NOW, POLICY)
    e.start_attempt(NOW + POLICY.lease, POLICY)  # taken over as interrupted
    e.fail(1, "timeout", False, NOW, POLICY)  # the first sender's late failure
    assert e.status == SENDING and e.attempts == 2
    e.mark_sent(2, "250 ok", "s")
    e.mark_sent(1, "250 ok", "s")  # the late copy's success: already sent
    assert events_of(e).count("Sent") == 1


def test_an_operator_retries_a_parked_email_with_a_fresh_budget_and_is_named():
    policy = DeliveryPolicy(max_attempts=2)
    e = email()
    for attempt in (1, 2):
        e.start_attempt(NOW, policy)
        e.fail(attempt, "451", False, NOW, policy)
    assert e.status == PARKED
    e.retry("staff:api")
    assert e.status == QUEUED and e.last_error is None and e.is_due(NOW)
    e.start_attempt(NOW, policy)
    e.fail(3, "451", False, NOW, policy)
    assert e.status == RETRYING  # a fresh budget: 1 of 2
    retry = [ev for ev in e.collect_events() if type(ev).__name__ == "RetryRequested"]
    assert [r.by for r in retry] == ["staff:api"]


def test_only_a_parked_email_can_be_retried():
    e = email()
    with pytest.raises(NotParked):
        e.retry("staff:api")


def test_withdrawn_when_there_is_nothing_left_to_send():
    e = email()
    e.withdraw("the recipient's personal data was erased")
    assert e.status == WITHDRAWN and not e.is_due(NOW)
    e.withdraw("again")
    assert events_of(e) == ["Queued", "Withdrawn"]


@pytest.mark.parametrize("ending", ["sent", "parked", "withdrawn"])
def test_an_address_kept_only_for_this_email_is_released_when_the_email_is_done(ending):
    e = email(erase=True)
    e.start_attempt(NOW, POLICY)
    if ending == "sent":
        e.mark_sent(1, "250", "s")
    elif ending == "parked":
        e.fail(1, "550", True, NOW, POLICY)
    else:
        e.withdraw("expired")
    erasures = [ev for ev in e.collect_events() if type(ev).__name__ == "RecipientErasureDue"]
    assert [x.subject_id for x in erasures] == [e.recipient.subject_id]


def test_a_temporary_failure_keeps_the_address_for_the_next_attempt():
    e = email(erase=True)
    e.start_attempt(NOW, POLICY)
    e.fail(1, "451", False, NOW, POLICY)
    assert "RecipientErasureDue" not in events_of(e)


def test_a_customer_keeps_its_own_copy_of_the_address_and_forgets_nothing_twice():
    account = uuid.uuid4()
    contact = Customer.contact_subject(account)
    c = Customer(account_id=account, tenant_id="acme", address=None, language=None)
    c.change_address(Personal(contact, "a@example.com"))
    c.change_address(Personal(contact, "a@example.com"))
    c.prefer_language("de")
    c.prefer_language("de")
    c.redact("staff:s1")
    c.redact("staff:s1")
    c.change_address(Personal(contact, "b@example.com"))  # too late: redacted
    assert events_of(c) == ["Registered", "AddressChanged", "LanguageChosen", "Redacted"]
    assert c.address.value == "a@example.com"
    assert contact != account  # not the account's subject: its key is ours


def test_tenant_branding_records_only_real_changes_and_who_made_them():
    t = Tenant(tenant_id="acme")
    t.change_branding({"business_name": "Acme Tours", "footer": None}, "staff:api")
    t.change_branding({"business_name": "Acme Tours"}, "staff:api")
    with pytest.raises(UnknownBranding):
        t.change_branding({"font": "Comic Sans"}, "staff:api")
    changes = [e for e in t.collect_events() if type(e).__name__ == "BrandingChanged"]
    assert [(c.changes, c.by) for c in changes] == [({"business_name": "Acme Tours"}, "staff:api")]
