"""The attacks on the accounts service's HTTP edge, each performed against the real service
(a process on a real Kafka broker) where the attack goes through HTTP, in memory where it is a
rule of the domain.

Every test speaks as a client of its own (a random X-Forwarded-For, which the service trusts
from 127.0.0.1 as it would from its proxy): the per-client limits are real here."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support.system import GENEROUS_CLIENT_LIMITS, System, set_tenant_settings

TENANT = "harbour-cruises"
PASSWORD = "kayak-at-dawn-on-a-still-lake"
ATTACKER_PASSWORD = "mallory-keeps-this-one-to-herself"
LIMITS = json.loads(GENEROUS_CLIENT_LIMITS) | {"login.client": "20/15 minutes"}


@pytest.fixture(scope="package")
def system(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap_servers: str) -> Iterator[System]:
    system = System(
        tmp_path_factory.mktemp("security"),
        kafka_bootstrap_servers,
        smtp_port=1,
        overrides={"accounts": {"RATE_LIMITS": json.dumps(LIMITS)}},
    )
    system.start("accounts")
    set_tenant_settings(system, TENANT, customer_logins_enabled=True)
    yield system
    system.stop()
    assert system.accounts.errors() == []


def client_headers(ip: str | None = None) -> dict[str, str]:
    return {"X-Forwarded-For": ip or f"198.51.100.{secrets.randbelow(250) + 1}"}


@pytest.fixture
def api(system: System) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=system.accounts.url, timeout=30, headers=client_headers()) as client:
        yield client


def new_email(prefix: str = "victim") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.com"
