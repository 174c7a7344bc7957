"""M1: bypassing the login rate limits.

Before the fix a login was checked against the limit before argon2 ran and counted only after
it failed: a burst of parallel guesses all passed the check before any was counted. And each
IPv6 address was a bucket of its own, while any IPv6 host has a whole /64 to choose from."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.security.conftest import PASSWORD, TENANT, client_headers, new_email
from tests.support.system import verified_customer

pytestmark = pytest.mark.integration

LOGIN_EMAIL_LIMIT = 10  # failed logins per address and 15 minutes (the default)
LOGIN_CLIENT_LIMIT = 20  # per client network, as conftest sets it


def burst(system, requests: list[tuple[dict, dict]]) -> list[int]:
    """Send every request at once, each on a connection of its own."""

    def send(request: tuple[dict, dict]) -> int:
        body, headers = request
        url = f"{system.accounts.url}/v1/tenants/{TENANT}/sessions"
        return httpx.post(url, json=body, headers=headers, timeout=120).status_code

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(send, requests))


def test_a_parallel_burst_of_password_guesses_gets_no_more_than_the_limit(system):
    victim = new_email()
    verified_customer(system, None, TENANT, victim, PASSWORD)
    guesses = [({"email": victim, "password": f"guess-number-{i}-xyz"}, client_headers()) for i in range(40)]
    answers = burst(system, guesses)
    assert answers.count(401) <= LOGIN_EMAIL_LIMIT and answers.count(429) >= 30, answers
    assert set(answers) <= {401, 429}


def test_the_right_password_is_not_counted_against_the_customer(system):
    """(Counted while it runs, given back when it succeeds: more logins *at once* than the
    limit would be refused, which no customer does.)"""
    customer = new_email()
    verified_customer(system, None, TENANT, customer, PASSWORD)
    for _ in range(LOGIN_EMAIL_LIMIT + 5):
        [answer] = burst(system, [({"email": customer, "password": PASSWORD}, client_headers())])
        assert answer == 200


def test_guesses_from_many_addresses_of_one_ipv6_64_count_as_one_client(system):
    answers = []
    for i in range(LOGIN_CLIENT_LIMIT + 1):  # a new address of the same /64, a new victim, each time
        guess = {"email": new_email(), "password": "not-the-password-at-all"}
        answers.append(
            httpx.post(
                f"{system.accounts.url}/v1/tenants/{TENANT}/sessions",
                json=guess,
                headers=client_headers(f"2001:db8:77:1:{i:x}::{i + 1:x}"),
                timeout=30,
            ).status_code
        )
    assert answers == [401] * LOGIN_CLIENT_LIMIT + [429]
    other_network = httpx.post(
        f"{system.accounts.url}/v1/tenants/{TENANT}/sessions",
        json={"email": new_email(), "password": "not-the-password-at-all"},
        headers=client_headers("2001:db8:77:2::1"),
        timeout=30,
    )
    assert other_network.status_code == 401
