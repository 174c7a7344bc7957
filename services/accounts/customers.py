"""What customers do: claim an account, prove their address, log in (password or emailed
link), look after their profile.

Requests a stranger can make about an address (claim, resend, magic link, reset) are answered
before this work runs (see `deferred.py`) and the same way whatever the address: so these use
cases return nothing, and simply do what fits the account they find, if any.
"""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID, uuid4

from backbone.credentials import Session
from backbone.domain import DomainError
from backbone.personal import Personal
from services.accounts.addresses import EmailAddress
from services.accounts.core import AccountsCore
from services.accounts.domainmodel import Account, Purpose


class InvalidCredentials(DomainError):
    code = "invalid_credentials"

    def __init__(self) -> None:
        # One sentence for every reason: unknown address, wrong password, not verified yet,
        # archived, or an account that logs in by emailed links only.
        super().__init__("The email or password is not correct.")


class SessionEnded(DomainError):
    code = "session_ended"


class AddressTaken(DomainError):
    code = "email_taken"


class WrongPassword(DomainError):
    code = "wrong_password"


class CustomerCases(AccountsCore):
    # ----------------------------------------------------------- anonymous, deferred

    def claim_account(self, tenant_id: str, email: str, name: str, language: str | None) -> None:
        """Claim an account for `email` (or do what fits the account it already has).

        No password is taken here: the claimant may not be the owner of the address, so the
        password is chosen by whoever follows the link that proves it (`verify_email`)."""

        def attempt() -> None:
            self.require_logins(tenant_id)
            if self.is_blocked(tenant_id, email):
                return
            reservation = self.reservation(tenant_id, email)
            account = self.account(reservation.account_id) if reservation and reservation.account_id else None
            if account is None:
                self._open_account(tenant_id, email, name, language, reservation)
            elif account.is_active and account.is_verified:
                account.issue(self.new_link(account.id, "magic_link"))  # "you already have one"
                self.save(account)
            elif account.is_active:
                account.renew_claim(self.new_link(account.id, "set_password"))
                self.save(account)

        self.retrying(attempt)

    def _open_account(
        self,
        tenant_id: str,
        email: str,
        name: str,
        language: str | None,
        reservation: EmailAddress | None,
    ) -> None:
        account_id = uuid4()
        account = Account(
            id=account_id,
            tenant_id=tenant_id,
            email=Personal(account_id, email),
            name=Personal(account_id, name),
            claimed_by="customer",
            password_hash=None,
            language=language,
            link=self.new_link(account_id, "verify_email"),
        )
        self.save(account, self.reserve(tenant_id, email, account_id, reservation))

    def reserve(
        self, tenant_id: str, email: str, account_id: UUID, reservation: EmailAddress | None
    ) -> EmailAddress:
        if reservation is None:
            return EmailAddress(
                id=self.index.address_id(tenant_id, email),
                tenant_id=tenant_id,
                email=Personal(account_id, email),
                account_id=account_id,
            )
        reservation.reserve(email=Personal(account_id, email), account_id=account_id)
        return reservation

    def request_link(
        self, tenant_id: str, email: str, purpose: Literal["verify", "magic_link", "password_reset"]
    ) -> None:
        """A link by email, if the address has an active account. An account whose address is
        not proven yet gets its verifying link again instead: that is what it needs first."""

        def attempt() -> None:
            self.require_logins(tenant_id)
            account = self.account_by_email(tenant_id, email)
            if account is None or not account.is_active:
                return
            if not account.is_verified:
                wanted: Purpose | None = account.verification_purpose()
            else:
                wanted = None if purpose == "verify" else purpose
            if wanted is not None:
                account.issue(self.new_link(account.id, wanted))
                self.save(account)

        self.retrying(attempt)

    # ------------------------------------------------------------------ links followed

    def verify_email(self, token: str, password: str | None = None, login_link: bool = False) -> Account:
        """Prove an address with the link sent to it. A first proof also settles how the
        customer logs in: with `password` (chosen now, by whoever reads the mailbox), or by
        emailed links (`login_link` sends one right away)."""

        def attempt() -> Account:
            account, token_hash = self.account_for_token(token)
            self.require_logins(account.tenant_id)
            purpose = account.redeem(("verify_email", "verify_new_email"), token_hash, self.clock())
            hashed = None
            if password is not None:
                self.passwords.check_strength(password, str(account.email), str(account.name))
                hashed = Personal(account.id, self.passwords.hash(password))
            changed: list[Any] = [account]
            if purpose == "verify_new_email":
                changed += self._move_reservation(account)
            account.verify(token_hash, self.clock(), hashed)
            if login_link and purpose == "verify_email" and not account.has_password:
                account.issue(self.new_link(account.id, "magic_link"))
            self.save(*changed)
            return account

        return self.retrying(attempt)

    def _move_reservation(self, account: Account) -> list[EmailAddress]:
        assert account.pending_email is not None and account.pending_email.value is not None
        new_address = account.pending_email.value
        target = self.reservation(account.tenant_id, new_address)
        if target is not None and target.account_id not in (None, account.id):
            raise AddressTaken("This address is now used by another account.")
        moved = [self.reserve(account.tenant_id, new_address, account.id, target)]
        old = self.reservation(account.tenant_id, str(account.email))
        if old is not None and old.account_id == account.id:
            old.release()
            moved.append(old)
        return moved

    def set_password(self, token: str, password: str) -> Account:
        """Choose a password with an emailed link (staff invitation or reset). Not a login:
        the customer logs in afterwards (and a reset ends every earlier session)."""

        def attempt() -> Account:
            account, token_hash = self.account_for_token(token)
            self.require_logins(account.tenant_id)
            account.redeem(("set_password", "password_reset"), token_hash, self.clock())
            self.passwords.check_strength(password, str(account.email), str(account.name))
            hashed = Personal(account.id, self.passwords.hash(password))
            account.set_password_by_link(token_hash, hashed, self.clock())
            self.save(account)
            return account

        return self.retrying(attempt)

    def log_in_by_link(self, token: str) -> Account:
        def attempt() -> Account:
            account, token_hash = self.account_for_token(token)
            self.require_logins(account.tenant_id)
            account.log_in_by_link(token_hash, self.clock())
            self.save(account)
            return account

        return self.retrying(attempt)

    # ---------------------------------------------------------------- logged in

    def log_in(self, tenant_id: str, email: str, password: str) -> Account:
        self.require_logins(tenant_id)
        account = self.account_by_email(tenant_id, email)
        stored = account.password_hash.value if account and account.password_hash else None
        if not self.passwords.matches(stored, password):
            raise InvalidCredentials()
        assert account is not None
        if not (account.is_active and account.is_verified):
            raise InvalidCredentials()
        return account

    def customer(self, session: Session) -> Account:
        """The account behind a session, if the session still stands (not logged out, not
        ended by a password change, the account active, logins on for its tenant)."""
        account = self.account(session.account_id)
        if account is None or account.tenant_id != session.tenant_id:
            raise SessionEnded("This session has ended. Log in again.")
        self.require_logins(account.tenant_id)
        if not (account.is_active and account.is_verified and account.session_is_current(session.issued_at)):
            raise SessionEnded("This session has ended. Log in again.")
        return account

    def log_out(self, session: Session) -> None:
        def attempt() -> None:
            account = self.customer(session)
            account.revoke_sessions(before=self.clock(), reason="logout")
            self.save(account)

        self.retrying(attempt)

    def change_password(self, session: Session, current: str | None, new: str) -> Account:
        def attempt() -> Account:
            self.check_password(session, current)
            account = self.customer(session)
            self.passwords.check_strength(new, str(account.email), str(account.name))
            account.change_password(Personal(account.id, self.passwords.hash(new)), self.clock())
            self.save(account)
            return account

        return self.retrying(attempt)

    def change_profile(self, session: Session, changes: dict[str, Any]) -> Account:
        def attempt() -> Account:
            account = self.customer(session)
            account.change_profile(personal(account.id, changes), source="customer")
            self.save(account)
            return account

        return self.retrying(attempt)

    def check_password(self, session: Session, password: str | None) -> None:
        """Sensitive changes need the current password (accounts without one rely on the
        session, which only an emailed link could have opened)."""
        account = self.customer(session)
        if account.has_password and not self.passwords.matches(account.password_hash.value, password or ""):
            raise WrongPassword("The current password is not correct.")

    def request_email_change(self, session: Session, new_email: str) -> None:
        """Send a link to the new address; it takes effect when followed. An address that
        cannot be used (another account's, blocklisted) gets nothing, and the answer is the
        same (the caller defers this work): whether some address has an account is not for a
        customer to find out."""

        def attempt() -> None:
            account = self.customer(session)
            if new_email == str(account.email) or self.is_blocked(account.tenant_id, new_email):
                return
            taken = self.reservation(account.tenant_id, new_email)
            if taken is not None and taken.account_id not in (None, account.id):
                return
            account.change_email(
                Personal(account.id, new_email), self.new_link(account.id, "verify_new_email")
            )
            self.save(account)

        self.retrying(attempt)


def personal(account_id: UUID, changes: dict[str, Any]) -> dict[str, Any]:
    """Profile changes as the domain takes them: personal values sealed with the account's
    key (`Personal`), the rest as they are."""
    result: dict[str, Any] = {}
    for field, value in changes.items():
        if field in ("name", "phone"):
            result[field] = Personal(account_id, value) if value is not None else None
        elif field == "address":
            result[field] = (
                {
                    k: (Personal(account_id, v) if v is not None else None) if k != "country" else v
                    for k, v in value.items()
                }
                if value is not None
                else None
            )
        else:
            result[field] = value
    return result
