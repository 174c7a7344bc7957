"""Lower: emailed links outlived a password or an email change.

A customer who changes their password (because someone read their mail, or their old
mailbox) expects every login or reset link sent before to stop working; so does one who
moves to a new address (the old mailbox may not be theirs any more)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from backbone.credentials import Session
from services.accounts.domainmodel import LinkRefused
from tests.unit.accounts.conftest import PASSWORD, world  # noqa: F401 - accounts in memory

NEW_PASSWORD = "a-completely-new-passphrase-77"


def session_of(account, issued_at) -> Session:
    return Session(account.id, account.tenant_id, "s", issued_at, issued_at + timedelta(hours=1))


def login_and_reset_links(world, email):  # noqa: F811
    world.app.request_link("lakeside", email, "magic_link")
    world.app.request_link("lakeside", email, "password_reset")
    return world.link(email, "magic_link"), world.link(email, "password_reset")


def test_a_login_or_reset_link_sent_before_a_password_change_no_longer_works(world):  # noqa: F811
    account = world.claimed("lee@example.com")
    magic, reset = login_and_reset_links(world, "lee@example.com")
    world.clock.advance(seconds=1)
    world.app.change_password(session_of(account, world.clock()), PASSWORD, NEW_PASSWORD)
    with pytest.raises(LinkRefused):
        world.app.log_in_by_link(magic)
    with pytest.raises(LinkRefused):
        world.app.set_password(reset, "the-attacker-would-pick-this-9")


def test_a_login_link_sent_before_a_reset_no_longer_works(world):  # noqa: F811
    world.claimed("lou@example.com")
    magic, reset = login_and_reset_links(world, "lou@example.com")
    world.app.set_password(reset, NEW_PASSWORD)
    with pytest.raises(LinkRefused):
        world.app.log_in_by_link(magic)


def test_links_sent_to_the_old_address_no_longer_work_after_an_email_change(world):  # noqa: F811
    account = world.claimed("lia@example.com")
    magic, reset = login_and_reset_links(world, "lia@example.com")
    world.app.request_email_change(session_of(account, world.clock()), "lia.new@example.com")
    world.app.verify_email(world.link("lia@example.com", "verify_new_email"))
    with pytest.raises(LinkRefused):
        world.app.log_in_by_link(magic)
    with pytest.raises(LinkRefused):
        world.app.set_password(reset, "the-old-mailbox-owner-picks-9")
