"""The accounts application in memory (eventsourcing's POPO store), with a clock the test moves
and the notifier's key pair, to open the links it would email."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from argon2 import PasswordHasher

from backbone.credentials import load_or_create_sealing_keys, unseal
from backbone.eventstore import store_env
from backbone.settings import StoreSettings
from services.accounts.application import Accounts, AccountsConfig
from services.accounts.passwords import Passwords

TENANT = "lakeside"
PASSWORD = "kayak-at-dawn-on-a-still-lake"


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class World:
    app: Accounts
    clock: Clock
    notifier_key: bytes

    def link(self, email: str, purpose: str) -> str:
        """The token of the live link of `purpose` of the account with `email`, as the
        notifier would open it."""
        account = self.app.account_by_email(TENANT, email)
        assert account is not None, email
        url = unseal(self.notifier_key, account.links[purpose].sealed_link)
        assert url.startswith("https://accounts.example.test/")
        return url.split("token=", 1)[1]

    def claimed(self, email: str, password: str | None = PASSWORD, verify: bool = True):
        self.app.claim_account(TENANT, email, "Ada Lovelace", "en")
        if verify:  # whoever follows the link chooses the password (or none)
            self.app.verify_email(self.link(email, "verify_email"), password)
        return self.app.account_by_email(TENANT, email)


@pytest.fixture
def world(tmp_path) -> Iterator[World]:
    private, public = load_or_create_sealing_keys(tmp_path / "sealing.key")
    clock = Clock(datetime(2030, 5, 1, 9, 0, tzinfo=UTC))
    app = Accounts(
        AccountsConfig("https://accounts.example.test", public),
        env=store_env(StoreSettings(kind="memory"), "accounts"),
        clock=clock,
        # Cheap hashes: these tests are about the rules, not about argon2's cost.
        passwords=Passwords(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)),
    )
    app.change_settings(TENANT, {"customer_logins_enabled": True})
    yield World(app, clock, private)
    app.close()
