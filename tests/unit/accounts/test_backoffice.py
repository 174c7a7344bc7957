"""The staff's side of accounts, in memory: accounts created for customers, the directory's
edits, archive, blocklist, redaction (with its crash-safety), staff members."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest

from backbone.credentials import Session
from backbone.follower import read_log
from backbone.http import NotFound
from backbone.personal import ERASED_TEXT, Personal
from services.accounts import history
from services.accounts.addresses import AddressIndex
from services.accounts.backoffice import EmailBlocked
from services.accounts.customers import AddressTaken, InvalidCredentials, SessionEnded
from services.accounts.domainmodel import Account, AccountInactive, LinkRefused, NothingToVerify
from services.accounts.erasure import Erasures
from tests.unit.accounts.conftest import PASSWORD, TENANT


def test_staff_create_an_account_that_the_customer_claims_by_choosing_a_password(world):
    account_id = world.app.create_account(
        TENANT, "rob@example.com", "Rob", {"phone": "+44 20 7946 0000", "language": "en"}
    )
    account = world.app.account(account_id)
    assert account.claimed_by == "staff" and not account.is_verified and not account.has_password
    with pytest.raises(AddressTaken):
        world.app.create_account(TENANT, "rob@example.com", "Rob again", {})

    world.app.set_password(world.link("rob@example.com", "set_password"), "robs-own-long-passphrase")
    account = world.app.log_in(TENANT, "rob@example.com", "robs-own-long-passphrase")
    assert account.is_verified and account.phone.value == "+44 20 7946 0000"


def test_staff_fix_an_unproven_address_at_once_and_a_proven_one_only_through_the_customer(world):
    account_id = world.app.create_account(TENANT, "typo@exmaple.com", "Sue", {})
    world.app.edit_account(TENANT, account_id, {"email": "sue@example.com", "name": "Sue Smith"})
    assert world.app.account_by_email(TENANT, "sue@example.com").id == account_id
    assert world.app.account_by_email(TENANT, "typo@exmaple.com") is None
    world.app.set_password(world.link("sue@example.com", "set_password"), "sues-own-long-passphrase")

    world.app.edit_account(TENANT, account_id, {"email": "sue@work.example.com"})
    assert str(world.app.account(account_id).email) == "sue@example.com"  # until she proves it
    world.app.verify_email(world.link("sue@example.com", "verify_new_email"))
    assert str(world.app.account(account_id).email) == "sue@work.example.com"


def test_resend_archive_and_activate(world):
    account_id = world.app.create_account(TENANT, "tom@example.com", "Tom", {})
    first = world.link("tom@example.com", "set_password")
    world.app.resend_verification(TENANT, account_id)
    with pytest.raises(LinkRefused):
        world.app.set_password(first, "toms-own-long-passphrase")
    world.app.set_password(world.link("tom@example.com", "set_password"), "toms-own-long-passphrase")
    with pytest.raises(NothingToVerify):
        world.app.resend_verification(TENANT, account_id)

    session = Session(account_id, TENANT, "s", world.clock.now, world.clock.now + timedelta(hours=1))
    world.clock.advance(seconds=1)
    world.app.archive(TENANT, account_id)
    with pytest.raises(SessionEnded):
        world.app.customer(session)
    with pytest.raises(InvalidCredentials):
        world.app.log_in(TENANT, "tom@example.com", "toms-own-long-passphrase")
    world.app.request_link(TENANT, "tom@example.com", "magic_link")
    assert "magic_link" not in world.app.account(account_id).links
    with pytest.raises(AccountInactive):
        world.app.edit_account(TENANT, account_id, {"name": "Thomas"})

    world.app.activate(TENANT, account_id)
    assert world.app.log_in(TENANT, "tom@example.com", "toms-own-long-passphrase").is_active


def test_staff_reach_their_own_tenant_only(world):
    account = world.claimed("uma@example.com")
    for attempt in (
        lambda: world.app.edit_account("other", account.id, {"name": "x"}),
        lambda: world.app.archive("other", account.id),
        lambda: world.app.redact("other", account.id),
        lambda: world.app.staff_account("other", account.id),
        lambda: world.app.staff_account(TENANT, uuid.uuid4()),
    ):
        with pytest.raises(NotFound):
            attempt()
    assert world.app.account(account.id).is_active


def test_a_blocklisted_address_cannot_claim_and_is_not_kept_in_the_clear(world):
    entry_id = world.app.block_email(TENANT, "spam@example.com")
    world.app.claim_account(TENANT, "spam@example.com", "Spam", None)
    assert world.app.account_by_email(TENANT, "spam@example.com") is None
    with pytest.raises(EmailBlocked):
        world.app.create_account(TENANT, "spam@example.com", "Spam", {})
    events = [e for e in read_log(world.app, 0, 1000) if e.event.originator_id == entry_id]
    assert events and all("spam@example.com" not in repr(vars(e.event)) for e in events)
    assert events[0].event.hint == "s***@example.com"

    world.app.unblock_email(TENANT, entry_id)
    world.app.claim_account(TENANT, "spam@example.com", "Not spam", None)
    assert world.app.account_by_email(TENANT, "spam@example.com") is not None
    with pytest.raises(NotFound):
        world.app.unblock_email("other", entry_id)


def test_redaction_erases_the_personal_data_and_frees_the_address(world):
    account = world.claimed("vic@example.com")
    world.app.change_profile(
        Session(account.id, TENANT, "s", world.clock.now, world.clock.now), {"phone": "+1 555 0100"}
    )
    world.app.redact(TENANT, account.id)

    redacted = world.app.account(account.id)
    assert redacted.status == "redacted" and world.app.vault.is_erased(account.id)
    entries = [history.entry(e) for e in world.app.repository.event_store.get(account.id)]
    assert entries[0]["details"]["email"] == ERASED_TEXT and entries[0]["details"]["name"] == ERASED_TEXT
    assert "vic@example.com" not in repr(entries) and "Ada Lovelace" not in repr(entries)
    with pytest.raises(InvalidCredentials):
        world.app.log_in(TENANT, "vic@example.com", PASSWORD)
    with pytest.raises(AccountInactive):
        world.app.activate(TENANT, account.id)

    # The address may start afresh; nothing of the old account comes back with it.
    renewed = world.claimed("vic@example.com")
    assert renewed.id != account.id and world.app.account(account.id).email.value is None


def test_a_redaction_recorded_but_not_carried_out_is_finished_by_the_follower(world):
    """A crash between recording the decision and destroying the key."""
    account = world.claimed("wes@example.com")
    decided: Account = world.app.account(account.id)
    decided.redact(world.clock.now)
    world.app.save(decided)  # ... and the process died here
    assert not world.app.vault.is_erased(account.id)

    erasures = Erasures(world.app, "accounts")
    asyncio.run(erasures.handle(read_log(world.app, 0, 1000)))
    assert world.app.vault.is_erased(account.id)
    assert world.app.position("accounts.erasures") == world.app.recorder.max_notification_id()
    assert world.app.account(account.id).email == Personal(account.id, None)


def test_staff_keys_work_for_their_tenant_until_removed(world):
    staff_id, key = world.app.add_staff_member(TENANT, "front desk")
    member = world.app.staff_member_for_key(key)
    assert member.id == staff_id and member.tenant_id == TENANT
    prefix, secret = key.split(".")
    altered = secret[:-1] + ("B" if secret.endswith("A") else "A")  # one character off
    for forged in (f"{prefix}.{altered}", prefix, f"staff_{uuid.uuid4().hex}.{secret}", "", "staff_."):
        assert world.app.staff_member_for_key(forged) is None
    with pytest.raises(NotFound):
        world.app.remove_staff_member("other", staff_id)
    world.app.remove_staff_member(TENANT, staff_id)
    assert world.app.staff_member_for_key(key) is None


def test_address_ids_need_the_service_secret():
    one, two = AddressIndex(b"a" * 32), AddressIndex(b"b" * 32)
    assert one.address_id("t", "x@example.com") == one.address_id("t", "x@example.com")
    assert one.address_id("t", "x@example.com") != two.address_id("t", "x@example.com")
    assert one.address_id("t", "x@example.com") != one.address_id("u", "x@example.com")
    assert one.address_id("t", "x@example.com") != one.blocklist_id("t", "x@example.com")
