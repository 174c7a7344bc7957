"""The accounts service's use cases."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from backbone import credentials
from backbone.domain import DomainError
from backbone.eventstore import ServiceApplication
from backbone.personal import Personal, Vault
from services.accounts.domainmodel import Account, EmailAddress, TenantSettings, VerificationFailed

Clock = Callable[[], datetime]


class LoginsDisabled(DomainError):
    code = "customer_logins_disabled"
    http_status = 403


class InvalidCredentials(DomainError):
    code = "invalid_credentials"
    http_status = 401


@dataclass(frozen=True)
class AccountsConfig:
    public_base_url: str  # links in emails are built from this, never from a request
    notifier_public_key: bytes  # links are sealed for the notifier
    verification_ttl: timedelta = timedelta(hours=24)


class Accounts(ServiceApplication):
    name = "accounts"
    snapshotting_intervals = {Account: 50}  # noqa: RUF012

    def __init__(
        self,
        config: AccountsConfig,
        env: dict[str, str] | None = None,
        clock: Clock = lambda: datetime.now(UTC),
        vault: Vault | None = None,
    ):
        super().__init__(env, vault)
        self.config = config
        self.clock = clock
        self.passwords = PasswordHasher()
        # A hash to verify against when the email is unknown, so that a login takes as long
        # for an unknown address as for a known one (no enumeration by timing).
        self._decoy_hash = self.passwords.hash(credentials.new_token())

    # ---------------------------------------------------------------------- customers

    def claim_account(
        self, tenant_id: str, email: str, name: str, password: str | None, claimed_by: str
    ) -> UUID | None:
        """Claim an account for `email`. Returns its id, or None if the address is taken.

        The caller answers the same either way: whether an address has an account is not
        something a stranger may learn here."""
        self._require_logins(tenant_id)
        if self._account_id_for(tenant_id, email) is not None:
            return None
        token = credentials.new_token()
        account_id = uuid4()
        link = f"{self.config.public_base_url.rstrip('/')}/verify-email?token={account_id}.{token}"
        account = Account(
            tenant_id=tenant_id,
            email=Personal(account_id, email),
            name=Personal(account_id, name),
            password_hash=self.passwords.hash(password) if password else None,
            claimed_by=claimed_by,
            verification_hash=credentials.token_hash(token),
            verification_expires_at=self.clock() + self.config.verification_ttl,
            sealed_verification_link=credentials.seal(self.config.notifier_public_key, link),
            id=account_id,
        )
        reservation = EmailAddress(
            tenant_id=tenant_id, email=Personal(account_id, email), account_id=account.id
        )
        try:
            self.save(account, reservation)
        except IntegrityError:
            return None  # claimed concurrently
        return account.id

    def verify_email(self, token: str) -> Account:
        account_ref, _, secret = token.partition(".")
        try:
            account = self.repository.get(UUID(account_ref))
        except (ValueError, AggregateNotFoundError):
            account = None
        if not isinstance(account, Account) or not secret:
            raise VerificationFailed("This verification link is invalid or has expired.")
        account.verify_email(credentials.token_hash(secret), self.clock())
        self.save(account)
        return account

    def log_in(self, tenant_id: str, email: str, password: str) -> Account:
        self._require_logins(tenant_id)
        account_id = self._account_id_for(tenant_id, email)
        account = self.repository.get(account_id) if account_id else None
        stored = account.password_hash if account and account.password_hash else self._decoy_hash
        try:
            self.passwords.verify(stored, password)
            ok = account is not None and account.password_hash is not None
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok or not account.is_verified:
            raise InvalidCredentials(
                "The email or password is not correct, or the email is not verified yet."
            )
        return account

    def account(self, account_id: UUID) -> Account | None:
        try:
            account = self.repository.get(account_id)
        except AggregateNotFoundError:
            return None
        return account if isinstance(account, Account) else None

    # ------------------------------------------------------------------------- staff

    def change_settings(self, tenant_id: str, changes: dict[str, Any]) -> TenantSettings:
        settings = self._settings(tenant_id)
        settings.change(changes)
        self.save(settings)
        return settings

    def settings(self, tenant_id: str) -> dict[str, Any]:
        return dict(self._settings(tenant_id).values)

    # -------------------------------------------------------------------------- rules

    def _require_logins(self, tenant_id: str) -> None:
        if not self.settings(tenant_id)["customer_logins_enabled"]:
            raise LoginsDisabled("Customer accounts are not enabled for this business.")

    def _settings(self, tenant_id: str) -> TenantSettings:
        try:
            return self.repository.get(TenantSettings.create_id(tenant_id))
        except AggregateNotFoundError:
            return TenantSettings(tenant_id=tenant_id)

    def _account_id_for(self, tenant_id: str, email: str) -> UUID | None:
        try:
            reservation = self.repository.get(EmailAddress.create_id(tenant_id, email))
        except AggregateNotFoundError:
            return None
        return reservation.account_id
