"""Lower: `/v1/me/password` and the email change had no rate limit.

Whoever holds a customer's session (a shared computer, a stolen token) could guess the current
password there as fast as the server answers, then change it and lock the owner out; and send
email-change links to addresses of their choosing without end."""

from __future__ import annotations

import pytest

from tests.security.conftest import PASSWORD, new_email
from tests.support.system import verified_customer

pytestmark = pytest.mark.integration

PASSWORD_CHANGE_LIMIT = 10  # failed attempts per account and 15 minutes (the default)
EMAIL_CHANGE_LIMIT = 5  # per account and hour (the default)


def test_guessing_the_current_password_with_a_stolen_session_is_stopped(system, api):
    thief = verified_customer(system, None, "harbour-cruises", new_email(), PASSWORD)
    answers = [
        api.put(
            "/v1/me/password",
            headers=thief,
            json={"current_password": f"guess-{i}-of-many", "new_password": "the-thief-wants-this-one-1"},
        ).status_code
        for i in range(PASSWORD_CHANGE_LIMIT + 1)
    ]
    assert answers == [403] * PASSWORD_CHANGE_LIMIT + [429]
    right = api.put(
        "/v1/me/password",
        headers=thief,
        json={"current_password": PASSWORD, "new_password": "the-thief-wants-this-one-1"},
    )
    assert right.status_code == 429  # even the right one, until the window ends


def test_email_change_requests_are_limited_per_account(system, api):
    customer = verified_customer(system, None, "harbour-cruises", new_email(), PASSWORD)
    answers = [
        api.post(
            "/v1/me/email-change", headers=customer, json={"email": new_email("spam"), "current_password": PASSWORD}
        ).status_code
        for _ in range(EMAIL_CHANGE_LIMIT + 1)
    ]
    assert answers == [202] * EMAIL_CHANGE_LIMIT + [429]
