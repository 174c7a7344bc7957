"""Which events make which emails, in memory: recipient, language, content, once per event."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from backbone.auth import staff_member
from backbone.credentials import new_token, staff_api_key, token_hash
from backbone.eventstore import store_env
from backbone.http import create_api
from backbone.personal import Vault
from backbone.settings import StoreSettings
from backbone.unitofwork import UnitOfWork
from contracts import accounts as acc
from contracts import bookings as bk
from contracts.accounts import Cutoff
from contracts.envelope import Actor
from services.notifier.api import ROUTERS
from services.notifier.application import Notifier
from services.notifier.directory import Customer, Tenant
from services.notifier.domainmodel import STAFF, Email
from services.notifier.handlers import HANDLERS, prefetch

TENANT = "lakeside"
NOW = datetime.now(UTC)


@pytest.fixture
def notifier():
    app = Notifier(env=store_env(StoreSettings(kind="memory"), "notifier"))
    yield app
    app.close()


class Producer:
    """Plays accounts and bookings: their keys reach the notifier's vault, as on the bus."""

    def __init__(self, notifier):
        self.notifier = notifier
        self.vault = Vault("sqlite+pysqlite:///:memory:", "producer")

    def seal(self, subject, value):
        sealed = self.vault.seal(subject, value)
        for key in self.vault.unpublished():
            self.notifier.vault.accept(key)
        return sealed

    def envelope(self, tenant=TENANT):
        return {
            "event_id": uuid.uuid4(),
            "occurred_at": NOW,
            "tenant_id": tenant,
            "correlation_id": uuid.uuid4(),
        }


@pytest.fixture
def producer(notifier):
    return Producer(notifier)


class Asked(UnitOfWork):
    """A unit of work that notes which aggregates a handler asked for."""

    def __init__(self, app):
        super().__init__(app)
        self.asked = set()

    def get(self, cls, aggregate_id):
        self.asked.add(aggregate_id)
        return super().get(cls, aggregate_id)


def handle(notifier, *events):
    """Handle each event as the inbox does; and check on the way that the inbox's `prefetch`
    names, from the event's body on the bus, every aggregate its handler asked for (else
    the batch reads it on its own, one query and one replay each)."""
    for event in events:
        uow = Asked(notifier)
        HANDLERS[type(event)](event, uow)
        named = set(prefetch(event.model_dump(mode="json")))
        assert uow.asked <= named, f"{type(event).__name__}: not prefetched: {uow.asked - named}"
        notifier.save(*uow.changed())


def emails(notifier, event):
    found = []
    for template in (
        "verify_email",
        "invitation",
        "verify_new_email",
        "welcome",
        "magic_link",
        "password_reset",
        "booking_cancelled",
        "booking_cancelled_staff",
        "booking_modified",
        "account_redacted",
    ):
        email = notifier.email(Email.create_id(event.event_id, template))
        if email is not None:
            found.append(email)
    return found


def claimed(producer, account_id, email="ada@example.com", by="customer", language=None):
    return acc.AccountClaimed(
        **producer.envelope(),
        account_id=account_id,
        email=producer.seal(account_id, email),
        name=producer.seal(account_id, "Ada"),
        claimed_by=by,
        link="sealed-link-for-the-notifier-0123456789",
        link_expires_at=NOW + timedelta(hours=24),
        language=language,
    )


def test_a_claim_queues_the_verification_email_once_however_often_it_is_seen(notifier, producer):
    account = uuid.uuid4()
    event = claimed(producer, account)
    handle(notifier, event, event, event)
    [email] = emails(notifier, event)
    assert email.template == "verify_email" and email.recipient.value == "ada@example.com"
    assert email.recipient.subject_id == account  # erasing the account erases this address
    assert email.data["sealed_link"] == event.link  # still sealed: opened only to render
    assert email.data["name"].value == "Ada" and email.account_id == account
    assert email.language == "en"


def test_a_claim_by_staff_is_an_invitation_to_choose_a_password(notifier, producer):
    event = claimed(producer, uuid.uuid4(), by="staff")
    handle(notifier, event)
    assert [e.template for e in emails(notifier, event)] == ["invitation"]


@pytest.mark.parametrize(
    ("purpose", "template"),
    [
        ("verify_email", "verify_email"),
        ("set_password", "invitation"),
        ("verify_new_email", "verify_new_email"),
    ],
)
def test_a_new_link_goes_out_for_each_purpose(notifier, producer, purpose, template):
    account = uuid.uuid4()
    event = acc.VerificationRequested(
        **producer.envelope(),
        account_id=account,
        email=producer.seal(account, "new@example.com"),
        name=producer.seal(account, "Ada"),
        purpose=purpose,
        link="sealed-link-for-the-notifier-0123456789",
        link_expires_at=NOW + timedelta(hours=1),
    )
    handle(notifier, event)
    [email] = emails(notifier, event)
    assert email.template == template and email.recipient.value == "new@example.com"


def test_welcome_only_the_first_time_and_links_for_magic_login_and_reset(notifier, producer):
    account = uuid.uuid4()
    common = {"account_id": account, "email": producer.seal(account, "ada@example.com")}
    first = acc.EmailVerified(
        **producer.envelope(), **common, name=producer.seal(account, "Ada"), first_time=True
    )
    again = acc.EmailVerified(
        **producer.envelope(), **common, name=producer.seal(account, "Ada"), first_time=False
    )
    link = {"link": "sealed-link-for-the-notifier-0123456789", "link_expires_at": NOW + timedelta(minutes=15)}
    magic = acc.MagicLinkRequested(
        **producer.envelope(), **common, name=producer.seal(account, "Ada"), **link
    )
    reset = acc.PasswordResetRequested(
        **producer.envelope(), **common, name=producer.seal(account, "Ada"), **link
    )
    handle(notifier, first, again, magic, reset)
    assert [e.template for e in emails(notifier, first)] == ["welcome"]
    assert emails(notifier, again) == []
    assert [e.template for e in emails(notifier, magic)] == ["magic_link"]
    assert [e.template for e in emails(notifier, reset)] == ["password_reset"]


def test_the_customers_language_else_the_tenants_else_the_deployments(notifier, producer):
    notifier.change_branding("alpen", {"default_language": "de"}, "staff:api")
    account = uuid.uuid4()
    english_claim = claimed(producer, account, language="en")
    handle(notifier, english_claim)
    assert emails(notifier, english_claim)[0].language == "en"

    german = acc.ProfileChanged(
        **producer.envelope(),
        account_id=account,
        language="de-AT",
        source="customer",
        changed_by=Actor(kind="customer", id=str(account)),
    )
    magic = acc.MagicLinkRequested(
        **producer.envelope(),
        account_id=account,
        email=producer.seal(account, "ada@example.com"),
        name=producer.seal(account, "Ada"),
        link="sealed-link-for-the-notifier-0123456789",
        link_expires_at=NOW + timedelta(minutes=15),
    )
    handle(notifier, german, magic)
    assert emails(notifier, magic)[0].language == "de"  # de-AT: we write German

    unknown = claimed(producer, uuid.uuid4(), language="fr")  # not a language we write in
    handle(notifier, unknown)
    assert emails(notifier, unknown)[0].language == "en"
    alpen = acc.AccountClaimed(
        **{**claimed(producer, uuid.uuid4()).model_dump(), **producer.envelope("alpen")}
    )
    handle(notifier, alpen)
    assert emails(notifier, alpen)[0].language == "de"


def placed(producer, booking_id, account_id=None):
    start = NOW + timedelta(days=7)
    return bk.BookingPlaced(
        **producer.envelope(),
        booking_id=booking_id,
        booking_code="LAKE-0042",
        account_id=account_id,
        customer=bk.SealedCustomer(
            email=producer.seal(booking_id, "bo@example.com"), name=producer.seal(booking_id, "Bo")
        ),
        lines=[
            bk.BookingLine(
                kind="item",
                ref="kayak",
                name="Kayak for two",
                starts_at=start,
                ends_at=start + timedelta(hours=3),
                unit_price=Decimal("80.00"),
            )
        ],
        currency="EUR",
        total=Decimal("80.00"),
        amount_paid=Decimal("30.00"),
        status="PART",
        terms=bk.BookingTerms(
            settings_version=1,
            allow_cancel=True,
            cancel_cutoff=Cutoff(amount=2, unit="days"),
            allow_modify=False,
            modify_cutoff=Cutoff(amount=0, unit="days"),
            blocking_statuses=(),
            timezone="Europe/Vienna",
        ),
        placed_by=Actor(kind="service", id="storefront"),
    )


def cancelled(producer, booking_id, **overrides):
    return bk.BookingCancelled(
        **producer.envelope(),
        booking_id=booking_id,
        booking_code="LAKE-0042",
        account_id=None,
        email=producer.seal(booking_id, "bo@example.com"),
        name=producer.seal(booking_id, "Bo"),
        cancelled_by=Actor(kind="staff", id="s7"),
        status_before="PART",
        amount_paid=Decimal("30.00"),
        currency="EUR",
        refund_due=Decimal("30.00"),
        reason="storm warning",
        **{"rules_overridden": True, **overrides},
    )


def test_a_cancellation_tells_the_customer_what_was_cancelled_and_staff_what_to_refund(notifier, producer):
    notifier.change_branding(TENANT, {"staff_email": "desk@lakeside.example"}, "staff:api")
    booking = uuid.uuid4()
    event = cancelled(producer, booking)
    handle(notifier, placed(producer, booking), event)
    customer, staff = emails(notifier, event)
    assert customer.template == "booking_cancelled" and customer.recipient.value == "bo@example.com"
    assert [line["name"] for line in customer.data["lines"]] == ["Kayak for two"]
    assert customer.booking_id == booking and customer.data["refund_due"] == Decimal("30.00")
    assert staff.template == "booking_cancelled_staff" and staff.audience == STAFF
    assert staff.recipient.value == "desk@lakeside.example"
    assert staff.recipient.subject_id == Tenant.staff_subject(TENANT)
    assert staff.data["customer_email"].value == "bo@example.com"
    assert staff.data["rules_overridden"] is True and staff.data["cancelled_by_id"] == "s7"


def test_a_staff_notice_for_a_tenant_without_a_staff_address_has_no_recipient_yet(notifier, producer):
    event = cancelled(producer, uuid.uuid4())
    handle(notifier, event)
    staff = next(e for e in emails(notifier, event) if e.audience == STAFF)
    assert staff.recipient is None  # parked by the sender, addressed when retried


def test_a_modification_gives_the_new_total_and_balance_and_updates_what_was_booked(notifier, producer):
    booking = uuid.uuid4()
    first = placed(producer, booking)
    changed = bk.BookingModified(
        **producer.envelope(),
        booking_id=booking,
        booking_code="LAKE-0042",
        account_id=None,
        email=producer.seal(booking, "bo@example.com"),
        name=producer.seal(booking, "Bo"),
        modified_by=Actor(kind="customer", id="c1"),
        changes=["Picnic lunch added"],
        lines=[*first.lines, first.lines[0].model_copy(update={"name": "Picnic lunch"})],
        currency="EUR",
        total=Decimal("105.00"),
        amount_paid=Decimal("30.00"),
        balance_due=Decimal("75.00"),
    )
    handle(notifier, first, changed)
    [email] = emails(notifier, changed)
    assert email.template == "booking_modified" and email.data["balance_due"] == Decimal("75.00")
    assert email.data["changes"] == ["Picnic lunch added"]
    later = cancelled(producer, booking)
    handle(notifier, later)
    assert [line["name"] for line in emails(notifier, later)[0].data["lines"]] == [
        "Kayak for two",
        "Picnic lunch",
    ]


def test_a_redaction_is_confirmed_to_the_notifiers_own_copy_of_the_address(notifier, producer):
    account = uuid.uuid4()
    handle(notifier, claimed(producer, account, email="gone@example.com"))
    notifier.vault.erase(account)  # the erasure on the keys topic came first
    redacted = acc.AccountRedacted(
        **producer.envelope(), account_id=account, redacted_by=Actor(kind="staff", id="s1")
    )
    handle(notifier, redacted, redacted)
    [confirmation] = emails(notifier, redacted)
    assert confirmation.template == "account_redacted"
    assert confirmation.recipient.value == "gone@example.com"
    assert confirmation.recipient.subject_id == Customer.contact_subject(account)
    assert confirmation.erase_recipient_when_done
    customer = notifier.repository.get(Customer.create_id(account))
    assert customer.redacted
    [redaction] = [e for e in notifier.events.get(customer.id) if type(e).__name__ == "Redacted"]
    assert redaction.subject_id == account and redaction.by == "staff:s1"


def test_a_redaction_of_an_account_we_never_heard_of_only_records_the_erasure(notifier, producer):
    account = uuid.uuid4()
    redacted = acc.AccountRedacted(
        **producer.envelope(), account_id=account, redacted_by=Actor(kind="staff", id="s1")
    )
    handle(notifier, redacted)
    assert emails(notifier, redacted) == []
    assert notifier.repository.get(Customer.create_id(account)).redacted


async def test_staff_keys_announced_by_accounts_open_the_staff_api_of_their_tenant_until_removed(
    notifier, producer
):
    staff_id, secret = uuid.uuid4(), new_token()
    key = {"Authorization": f"Bearer {staff_api_key(staff_id, secret)}"}
    api = create_api("notifier", "1", "test")
    # As services/notifier/bootstrap.py gives them (the branding routes need no read model).
    api.state.notifier, api.state.staff_member = notifier, staff_member(notifier.staff_key)
    for router in ROUTERS:
        api.include_router(router)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://test")

    async def branding(tenant=TENANT, headers=key):
        return (await client.get(f"/v1/staff/tenants/{tenant}/branding", headers=headers)).status_code

    assert await branding() == 401  # not announced yet
    added = acc.StaffMemberAdded(**producer.envelope(), staff_id=staff_id, key_hash=token_hash(secret))
    handle(notifier, added, added)  # seen twice: one key
    assert await branding() == 200
    assert await branding("hilltop") == 403  # another business
    forged = {"Authorization": f"Bearer {staff_api_key(staff_id, new_token())}"}
    assert await branding(headers=forged) == 401
    assert await branding(headers={"Authorization": f"Bearer {staff_api_key(uuid.uuid4(), secret)}"}) == 401
    assert await branding(headers={"Authorization": "Bearer staff_nonsense"}) == 401

    handle(notifier, acc.StaffMemberRemoved(**producer.envelope(), staff_id=staff_id))
    assert await branding() == 401
    handle(notifier, added)  # a late copy of the announcement does not bring it back
    assert await branding() == 401
