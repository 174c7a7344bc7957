"""What staff do, always within their own tenant: settings, accounts created for customers,
contact details, resends, archive/activate, the blocklist, redaction; and how the platform's
operators give a tenant its staff members (API keys)."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from backbone import credentials
from backbone.domain import DomainError, NotFound
from backbone.logging import mask_email
from backbone.personal import Personal
from services.accounts.addresses import BlockedEmail
from services.accounts.customers import AddressTaken, CustomerCases, personal
from services.accounts.domainmodel import Account, NothingToVerify
from services.accounts.tenants import StaffMember, TenantSettings


class EmailBlocked(DomainError):
    code = "email_blocked"


class StaffCases(CustomerCases):
    # ------------------------------------------------------------------- settings

    def change_settings(self, tenant_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        def attempt() -> dict[str, Any]:
            settings = self.tenant_settings(tenant_id)
            settings.change(changes)
            self.save(settings)
            return dict(settings.values)

        return self.retrying(attempt)

    def settings_history(self, tenant_id: str) -> list[Any]:
        return list(self.repository.event_store.get(TenantSettings.create_id(tenant_id)))

    # ------------------------------------------------------------------- accounts

    def staff_account(self, tenant_id: str, account_id: UUID) -> Account:
        """An account of this tenant; NotFound for any other (whether an id exists in another
        tenant is not for this tenant's staff to learn)."""
        account = self.account(account_id)
        if account is None or account.tenant_id != tenant_id:
            raise NotFound("No such account.")
        return account

    def account_history(self, tenant_id: str, account_id: UUID) -> list[Any]:
        """An account's events, for its staff's page (NotFound outside the tenant)."""
        self.staff_account(tenant_id, account_id)
        return list(self.repository.event_store.get(account_id))

    def create_account(self, tenant_id: str, email: str, name: str, details: dict[str, Any]) -> UUID:
        """An account for a customer, who claims it through the emailed set-password link
        (which also proves the address)."""

        def attempt() -> UUID:
            if self.is_blocked(tenant_id, email):
                raise EmailBlocked("This email address is on the blocklist.")
            reservation = self.reservation(tenant_id, email)
            if reservation is not None and reservation.account_id is not None:
                raise AddressTaken(f"An account with this email already exists: {reservation.account_id}.")
            account_id = uuid4()
            extra = personal(account_id, details)
            account = Account(
                id=account_id,
                tenant_id=tenant_id,
                email=Personal(account_id, email),
                name=Personal(account_id, name),
                claimed_by="staff",
                password_hash=None,
                language=extra.get("language"),
                link=self.new_link(account_id, "set_password"),
                phone=extra.get("phone"),
                address=extra.get("address"),
            )
            self.save(account, self.reserve(tenant_id, email, account_id, reservation))
            return account_id

        return self.retrying(attempt)

    def edit_account(self, tenant_id: str, account_id: UUID, changes: dict[str, Any]) -> Account:
        """Contact details; a new email address must still be proven by the customer."""

        def attempt() -> Account:
            account = self.staff_account(tenant_id, account_id)
            email = changes.get("email")
            details = {k: v for k, v in changes.items() if k != "email"}
            changed: list[Any] = [account]
            if details:
                account.change_profile(personal(account.id, details), source="staff")
            if email is not None and email != str(account.email):
                changed += self._new_address(account, email)
            self.save(*changed)
            return account

        return self.retrying(attempt)

    def _new_address(self, account: Account, email: str) -> list[Any]:
        if self.is_blocked(account.tenant_id, email):
            raise EmailBlocked("This email address is on the blocklist.")
        target = self.reservation(account.tenant_id, email)
        if target is not None and target.account_id not in (None, account.id):
            raise AddressTaken(f"Another account has this email address: {target.account_id}.")
        if account.is_verified:
            account.change_email(Personal(account.id, email), self.new_link(account.id, "verify_new_email"))
            return []
        # Nobody has proven the old address: correct it, and move its reservation now.
        purpose = account.verification_purpose() or "verify_email"
        old = self.reservation(account.tenant_id, str(account.email))
        account.correct_email(Personal(account.id, email), self.new_link(account.id, purpose))
        moved: list[Any] = [self.reserve(account.tenant_id, email, account.id, target)]
        if old is not None and old.account_id == account.id:
            old.release()
            moved.append(old)
        return moved

    def resend_verification(self, tenant_id: str, account_id: UUID) -> Account:
        def attempt() -> Account:
            account = self.staff_account(tenant_id, account_id)
            purpose = account.verification_purpose()
            if purpose is None:
                raise NothingToVerify("This account's email address is verified; there is nothing to resend.")
            account.issue(self.new_link(account.id, purpose))
            self.save(account)
            return account

        return self.retrying(attempt)

    def archive(self, tenant_id: str, account_id: UUID) -> Account:
        def attempt() -> Account:
            account = self.staff_account(tenant_id, account_id)
            account.archive(self.clock())
            self.save(account)
            return account

        return self.retrying(attempt)

    def activate(self, tenant_id: str, account_id: UUID) -> Account:
        def attempt() -> Account:
            account = self.staff_account(tenant_id, account_id)
            account.activate()
            self.save(account)
            return account

        return self.retrying(attempt)

    def redact(self, tenant_id: str, account_id: UUID) -> None:
        """Erase the customer's personal data: record the decision (with the address released
        for a new claim), then destroy the subject key. If the process dies in between, the
        erasure follower (`erasure.py`) destroys it at restart: the decision is the record."""

        def attempt() -> None:
            account = self.staff_account(tenant_id, account_id)
            reservation = self.reservation(tenant_id, str(account.email)) if account.email.value else None
            account.redact(self.clock())
            changed: list[Any] = [account]
            if reservation is not None and reservation.account_id == account.id:
                reservation.release()
                changed.append(reservation)
            self.save(*changed)

        self.retrying(attempt)
        self.erase_subject(account_id)

    # ------------------------------------------------------------------- blocklist

    def block_email(self, tenant_id: str, email: str) -> UUID:
        def attempt() -> UUID:
            entry_id = self.index.blocklist_id(tenant_id, email)
            entry = self.find(BlockedEmail, entry_id)
            if entry is None:
                entry = BlockedEmail(id=entry_id, tenant_id=tenant_id, hint=mask_email(email))
            else:
                entry.block()
            self.save(entry)
            return entry_id

        return self.retrying(attempt)

    def unblock_email(self, tenant_id: str, entry_id: UUID) -> None:
        def attempt() -> None:
            entry = self.find(BlockedEmail, entry_id)
            if entry is None or entry.tenant_id != tenant_id:
                raise NotFound("No such blocklist entry.")
            entry.unblock()
            self.save(entry)

        self.retrying(attempt)

    # ------------------------------------------------------------------- staff members

    def add_staff_member(self, tenant_id: str, label: str) -> tuple[UUID, str]:
        """A new staff member and their API key, which is shown this once and kept only as
        its hash."""
        staff_id = uuid4()
        secret = credentials.new_token()
        self.save(
            StaffMember(
                id=staff_id, tenant_id=tenant_id, label=label, key_hash=credentials.token_hash(secret)
            )
        )
        return staff_id, credentials.staff_api_key(staff_id, secret)

    def remove_staff_member(self, tenant_id: str, staff_id: UUID) -> None:
        member = self.find(StaffMember, staff_id)
        if member is None or member.tenant_id != tenant_id:
            raise NotFound("No such staff member.")
        member.remove()
        self.save(member)

    def staff_member(self, staff_id: UUID) -> StaffMember | None:
        member = self.find(StaffMember, staff_id)
        return member if member is not None and member.active else None

    def staff_member_for_key(self, api_key: str) -> StaffMember | None:
        parsed = credentials.parse_staff_api_key(api_key)
        member = self.staff_member(parsed[0]) if parsed else None
        if parsed is None or member is None or not member.admits(parsed[1]):
            return None
        return member
