"""The customer's side of accounts, in memory: claims, links, logins, sessions, profile."""

from __future__ import annotations

from datetime import timedelta

import pytest

from backbone.credentials import Session
from backbone.personal import Personal
from services.accounts.core import LoginsDisabled
from services.accounts.customers import AddressTaken, InvalidCredentials, SessionEnded, WrongPassword
from services.accounts.domainmodel import LinkRefused, PasswordNotExpected
from services.accounts.passwords import WeakPassword
from tests.unit.accounts.conftest import PASSWORD, TENANT


def session_of(account, issued_at) -> Session:
    return Session(account.id, account.tenant_id, "s", issued_at, issued_at + timedelta(hours=1))


def test_a_claim_shows_nothing_until_the_address_is_proven_then_logs_in(world):
    world.app.claim_account(TENANT, "ada@example.com", "Ada", "en")
    account = world.app.account_by_email(TENANT, "ada@example.com")
    assert account.claimed_by == "customer" and not account.is_verified
    with pytest.raises(InvalidCredentials):  # not verified: the same refusal as a wrong password
        world.app.log_in(TENANT, "ada@example.com", PASSWORD)

    token = world.link("ada@example.com", "verify_email")
    assert world.app.verify_email(token, PASSWORD).is_verified  # the password is chosen here
    assert world.app.log_in(TENANT, "ada@example.com", PASSWORD).id == account.id
    with pytest.raises(LinkRefused):  # single use
        world.app.verify_email(token)


def test_a_verifier_without_a_password_logs_in_by_emailed_links(world):
    world.app.claim_account(TENANT, "abe@example.com", "Abe", None)
    account = world.app.verify_email(world.link("abe@example.com", "verify_email"), login_link=True)
    assert account.is_verified and not account.has_password
    assert world.app.log_in_by_link(world.link("abe@example.com", "magic_link")).id == account.id


def test_a_weak_password_at_verification_is_refused_and_the_link_still_works(world):
    world.app.claim_account(TENANT, "ali@example.com", "Ali", None)
    token = world.link("ali@example.com", "verify_email")
    with pytest.raises(WeakPassword):
        world.app.verify_email(token, "password1")
    assert world.app.verify_email(token, PASSWORD).has_password


def test_a_link_to_a_new_address_changes_no_password(world):
    account = world.claimed("ari@example.com")
    world.app.request_email_change(session_of(account, world.clock()), "ari.new@example.com")
    token = world.link("ari@example.com", "verify_new_email")
    with pytest.raises(PasswordNotExpected):
        world.app.verify_email(token, "a-brand-new-passphrase-9")
    assert str(world.app.verify_email(token).email) == "ari.new@example.com"
    assert world.app.log_in(TENANT, "ari.new@example.com", PASSWORD).id == account.id


def test_links_expire_are_single_use_and_a_new_one_replaces_the_old(world):
    world.app.claim_account(TENANT, "bo@example.com", "Bo", None)
    first = world.link("bo@example.com", "verify_email")
    world.app.request_link(TENANT, "bo@example.com", "verify")  # resend
    second = world.link("bo@example.com", "verify_email")
    assert first != second
    with pytest.raises(LinkRefused):
        world.app.verify_email(first)  # the old one stopped working

    account_id, secret = second.split(".")
    for forged in (f"{account_id}.{secret[:-1]}x", f"{account_id}.", "not-a-token", f"{secret}.{account_id}"):
        with pytest.raises(LinkRefused):
            world.app.verify_email(forged)

    world.clock.advance(hours=24)  # the default lifetime of a verification link
    with pytest.raises(LinkRefused):
        world.app.verify_email(second)


def test_refusals_read_the_same_whatever_the_reason(world):
    world.app.claim_account(TENANT, "cy@example.com", "Cy", None)
    good = world.link("cy@example.com", "verify_email")
    messages = set()
    for token in (good[:-2] + "xx", "00000000-0000-0000-0000-000000000000.abc", "junk"):
        with pytest.raises(LinkRefused) as refused:
            world.app.verify_email(token)
        messages.add(str(refused.value))
    world.clock.advance(days=2)
    with pytest.raises(LinkRefused) as expired:
        world.app.verify_email(good)
    assert messages == {str(expired.value)}


def test_an_address_with_a_verified_account_cannot_be_taken_over(world):
    owner = world.claimed("dee@example.com")
    world.app.claim_account(TENANT, "dee@example.com", "Mallory", None)
    after = world.app.account(owner.id)
    assert str(after.name) == "Ada Lovelace" and after.has_password
    assert world.app.log_in(TENANT, "dee@example.com", PASSWORD).id == owner.id
    with pytest.raises(InvalidCredentials):
        world.app.log_in(TENANT, "dee@example.com", "another-strong-passphrase-42")
    assert "magic_link" in after.links  # the owner is sent a login link instead


def test_a_competing_claim_before_the_proof_drops_every_password_chosen_so_far(world):
    world.app.claim_account(TENANT, "eve@example.com", "Eve", None)
    world.app.claim_account(TENANT, "eve@example.com", "Mallory", None)
    account = world.app.account_by_email(TENANT, "eve@example.com")
    assert not account.has_password and account.verification_purpose() == "set_password"
    with pytest.raises(LinkRefused):  # the first claim's link is void
        world.app.verify_email(world.link("eve@example.com", "set_password"))

    # Whoever reads the mailbox chooses the password (and proves the address doing so).
    world.app.set_password(world.link("eve@example.com", "set_password"), "the-owner-picks-this-one-7")
    assert world.app.log_in(TENANT, "eve@example.com", "the-owner-picks-this-one-7").is_verified
    for guess in (PASSWORD, "mallory-chose-this-passphrase"):
        with pytest.raises(InvalidCredentials):
            world.app.log_in(TENANT, "eve@example.com", guess)


def test_nothing_happens_while_customer_logins_are_off(world):
    world.app.change_settings("closed", {})
    with pytest.raises(LoginsDisabled):
        world.app.claim_account("closed", "fay@example.com", "Fay", None)
    with pytest.raises(LoginsDisabled):
        world.app.log_in("closed", "fay@example.com", PASSWORD)


def test_magic_links_log_in_once_within_minutes(world):
    account = world.claimed("gil@example.com", password=None)
    world.app.request_link(TENANT, "gil@example.com", "magic_link")
    token = world.link("gil@example.com", "magic_link")
    assert world.app.log_in_by_link(token).id == account.id
    with pytest.raises(LinkRefused):
        world.app.log_in_by_link(token)  # used

    world.app.request_link(TENANT, "gil@example.com", "magic_link")
    late = world.link("gil@example.com", "magic_link")
    world.clock.advance(minutes=10)
    with pytest.raises(LinkRefused):
        world.app.log_in_by_link(late)  # expired


def test_an_unverified_account_asking_for_a_login_link_gets_its_verification_again(world):
    world.app.claim_account(TENANT, "hal@example.com", "Hal", None)
    first = world.link("hal@example.com", "verify_email")
    world.app.request_link(TENANT, "hal@example.com", "magic_link")
    account = world.app.account_by_email(TENANT, "hal@example.com")
    assert "magic_link" not in account.links and world.link("hal@example.com", "verify_email") != first


def test_a_password_reset_ends_earlier_sessions_and_is_not_a_login(world):
    account = world.claimed("ivy@example.com")
    before = session_of(account, world.clock.now)
    world.clock.advance(seconds=1)
    world.app.request_link(TENANT, "ivy@example.com", "password_reset")
    token = world.link("ivy@example.com", "password_reset")
    with pytest.raises(WeakPassword):
        world.app.set_password(token, "password1")
    world.app.set_password(token, "a-brand-new-long-passphrase")
    with pytest.raises(SessionEnded):
        world.app.customer(before)
    with pytest.raises(LinkRefused):
        world.app.set_password(token, "yet-another-long-passphrase")
    assert world.app.log_in(TENANT, "ivy@example.com", "a-brand-new-long-passphrase").id == account.id


def test_logout_and_password_change_end_sessions_issued_before_not_after(world):
    account = world.claimed("jo@example.com")
    first = session_of(account, world.clock.now)
    world.clock.advance(microseconds=1)
    world.app.log_out(first)
    with pytest.raises(SessionEnded):
        world.app.customer(first)
    world.clock.advance(microseconds=1)
    second = session_of(account, world.clock.now)
    assert world.app.customer(second).id == account.id

    with pytest.raises(WrongPassword):
        world.app.change_password(second, "not-my-password", "an-even-better-passphrase")
    world.clock.advance(microseconds=1)
    world.app.change_password(second, PASSWORD, "an-even-better-passphrase")
    with pytest.raises(SessionEnded):
        world.app.customer(second)
    world.clock.advance(microseconds=1)
    assert world.app.customer(session_of(account, world.clock.now)).id == account.id


def test_a_session_of_another_tenant_or_account_is_refused(world):
    account = world.claimed("kim@example.com")
    forged = Session(account.id, "another-tenant", "s", world.clock.now, world.clock.now)
    with pytest.raises(SessionEnded):
        world.app.customer(forged)


def test_profile_changes_and_an_email_change_takes_effect_when_proven(world):
    account = world.claimed("lea@example.com")
    session = session_of(account, world.clock.now)
    world.app.change_profile(session, {"phone": "+43 1 234567", "language": "de"})
    assert world.app.account(account.id).phone == Personal(account.id, "+43 1 234567")

    world.app.request_email_change(session, "lea.new@example.com")
    assert str(world.app.account(account.id).email) == "lea@example.com"  # not yet
    token = world.link("lea@example.com", "verify_new_email")
    world.app.verify_email(token)
    assert world.app.account_by_email(TENANT, "lea.new@example.com").id == account.id
    assert world.app.account_by_email(TENANT, "lea@example.com") is None  # released
    assert world.app.log_in(TENANT, "lea.new@example.com", PASSWORD).id == account.id


def test_an_email_change_to_a_taken_address_sends_nothing_and_a_race_is_refused(world):
    mia = world.claimed("mia@example.com")
    world.claimed("ned@example.com")
    session = session_of(mia, world.clock.now)
    world.app.request_email_change(session, "ned@example.com")
    assert world.app.account(mia.id).pending_email is None

    world.app.request_email_change(session, "mia2@example.com")
    token = world.link("mia@example.com", "verify_new_email")
    world.claimed("mia2@example.com")  # someone else got there first
    with pytest.raises(AddressTaken):
        world.app.verify_email(token)


def test_login_failures_read_the_same(world):
    world.claimed("oz@example.com")
    world.claimed("pat@example.com", password=None)
    world.app.claim_account(TENANT, "quin@example.com", "Quin", None)  # unverified
    refusals = set()
    for email, password in [
        ("oz@example.com", "wrong-password-here"),
        ("nobody@example.com", PASSWORD),
        ("pat@example.com", PASSWORD),
        ("quin@example.com", PASSWORD),
    ]:
        with pytest.raises(InvalidCredentials) as refused:
            world.app.log_in(TENANT, email, password)
        refusals.add((refused.value.code, str(refused.value)))
    assert len(refusals) == 1


def test_an_overlong_password_is_refused_clearly(world):
    with pytest.raises(WeakPassword, match="at most 72"):
        world.app.passwords.check_strength("x" * 73)
