"""The accounts application's foundations: its store, its configuration, finding aggregates,
issuing emailed links. The use cases build on this (`customers.py`, `backoffice.py`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.persistence import IntegrityError, JSONTranscoder, Transcoding

from backbone import credentials
from backbone.domain import Aggregate, DomainError
from backbone.eventstore import ServiceApplication
from backbone.personal import Vault
from services.accounts.addresses import AddressIndex, BlockedEmail, EmailAddress
from services.accounts.domainmodel import Account, EmailedLink, LinkRefused, Purpose
from services.accounts.passwords import Passwords
from services.accounts.tenants import TenantSettings

Clock = Callable[[], datetime]
A = TypeVar("A", bound=Aggregate)
R = TypeVar("R")

# Where each kind of link lands, under PUBLIC_BASE_URL (see `pages.py`).
LINK_PATHS: dict[str, str] = {
    "verify_email": "/verify-email",
    "verify_new_email": "/confirm-email",  # (links sent before it existed land on /verify-email)
    "set_password": "/set-password",
    "password_reset": "/reset-password",
    "magic_link": "/magic-link",
}


class LoginsDisabled(DomainError):
    code = "customer_logins_disabled"


@dataclass(frozen=True)
class AccountsConfig:
    public_base_url: str  # links in emails are built from this, never from a request
    notifier_public_key: bytes  # links are sealed for the notifier
    verification_ttl: timedelta = timedelta(hours=24)
    invitation_ttl: timedelta = timedelta(hours=72)
    magic_link_ttl: timedelta = timedelta(minutes=10)
    password_reset_ttl: timedelta = timedelta(minutes=30)

    def ttl(self, purpose: Purpose) -> timedelta:
        return {
            "verify_email": self.verification_ttl,
            "verify_new_email": self.verification_ttl,
            "set_password": self.invitation_ttl,
            "magic_link": self.magic_link_ttl,
            "password_reset": self.password_reset_ttl,
        }[purpose]


class EmailedLinkAsDict(Transcoding):
    type = EmailedLink
    name = "emailed_link"

    def encode(self, obj: EmailedLink) -> dict[str, Any]:
        return {"p": obj.purpose, "h": obj.token_hash, "x": obj.expires_at, "s": obj.sealed_link}

    def decode(self, data: dict[str, Any]) -> EmailedLink:
        return EmailedLink(data["p"], data["h"], data["x"], data["s"])


class AccountsCore(ServiceApplication):
    name = "accounts"
    snapshotting_intervals = {Account: 50}  # noqa: RUF012

    def __init__(
        self,
        config: AccountsConfig,
        env: dict[str, str] | None = None,
        clock: Clock = lambda: datetime.now(UTC),
        vault: Vault | None = None,
        passwords: Passwords | None = None,
    ):
        super().__init__(env, vault)
        self.config = config
        self.clock = clock
        self.passwords = passwords or Passwords()
        self.index = AddressIndex(self.vault.secret("email-index"))

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(EmailedLinkAsDict())

    # ------------------------------------------------------------------ finding things

    def account(self, account_id: UUID) -> Account | None:
        return self.find(Account, account_id)

    def reservation(self, tenant_id: str, email: str) -> EmailAddress | None:
        return self.find(EmailAddress, self.index.address_id(tenant_id, email))

    def account_by_email(self, tenant_id: str, email: str) -> Account | None:
        reservation = self.reservation(tenant_id, email)
        if reservation is None or reservation.account_id is None:
            return None
        return self.account(reservation.account_id)

    def is_blocked(self, tenant_id: str, email: str) -> bool:
        entry = self.find(BlockedEmail, self.index.blocklist_id(tenant_id, email))
        return entry is not None and entry.blocked

    def account_for_token(self, token: str) -> tuple[Account, str]:
        """The account a link's token names, and the hash to check the token with."""
        reference, _, secret = token.partition(".")
        try:
            account = self.account(UUID(reference))
        except ValueError:
            account = None
        if account is None or not secret:
            raise LinkRefused()
        return account, credentials.token_hash(secret)

    # ------------------------------------------------------------------ tenant rules

    def settings(self, tenant_id: str) -> dict[str, Any]:
        return dict(self.tenant_settings(tenant_id).values)

    def tenant_settings(self, tenant_id: str) -> TenantSettings:
        return self.find(TenantSettings, TenantSettings.create_id(tenant_id)) or TenantSettings(
            tenant_id=tenant_id
        )

    def require_logins(self, tenant_id: str) -> None:
        if not self.settings(tenant_id)["customer_logins_enabled"]:
            raise LoginsDisabled("Customer accounts are not enabled for this business.")

    # ------------------------------------------------------------------ emailed links

    def new_link(self, account_id: UUID, purpose: Purpose) -> EmailedLink:
        """A fresh 256-bit token in a link built from configuration (never from a request),
        sealed for the notifier; only its hash is kept."""
        token = credentials.new_token()
        url = f"{self.config.public_base_url.rstrip('/')}{LINK_PATHS[purpose]}?token={account_id}.{token}"
        return EmailedLink(
            purpose=purpose,
            token_hash=credentials.token_hash(token),
            expires_at=self.clock() + self.config.ttl(purpose),
            sealed_link=credentials.seal(self.config.notifier_public_key, url),
        )

    # ------------------------------------------------------------------ saving

    def retrying(self, attempt: Callable[[], R], attempts: int = 5) -> R:
        """Run a load-change-save use case again when a concurrent change (another request,
        a message from the bus) got there first: it re-reads and re-checks its rules."""
        for _ in range(attempts - 1):
            try:
                return attempt()
            except IntegrityError:
                continue
        return attempt()
