"""A customer account: claimed for an email address, proven through emailed links, erasable.

An `Account` is claimed by the customer or created by staff for them. Either way whoever follows
the emailed link that proves the address chooses the password (or none, to log in by emailed
links): a password chosen before the proof could be a stranger's. It shows nothing until the
address is verified.

Every emailed link carries a 256-bit token of which only the hash is kept here (`EmailedLink`);
a link is used once, expires, and is replaced (the old one stops working) when a new one of the
same purpose is issued. The account's id is also the customer's data-subject id: every personal
value (email, name, phone, address, even the password hash) is a `Personal` sealed with the
subject's key, so that redaction (destroying the key) erases it everywhere it was recorded.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from backbone.domain import Aggregate, DomainError, event
from backbone.personal import Personal

Purpose = Literal["verify_email", "set_password", "verify_new_email", "magic_link", "password_reset"]
VERIFYING: tuple[Purpose, ...] = ("verify_email", "set_password", "verify_new_email")
# Links that open the account: a password or email change revokes them.
LOGGING_IN: tuple[Purpose, ...] = ("magic_link", "password_reset")

ACTIVE = "active"
ARCHIVED = "archived"
REDACTED = "redacted"


class LinkRefused(DomainError):
    """The same sentence whatever the reason (unknown, used, replaced, expired): a caller
    holding a guessed or stale token learns nothing from it."""

    code = "link_invalid"

    def __init__(self) -> None:
        super().__init__("This link is invalid or has expired. Ask for a new one.")


class AccountInactive(DomainError):
    code = "account_inactive"


class NothingToVerify(DomainError):
    code = "nothing_to_verify"


class PasswordNotExpected(DomainError):
    code = "password_not_expected"


@dataclass(frozen=True)
class EmailedLink:
    """A link sent to the customer: what it is for, the hash of its token, until when it
    works, and the link itself sealed for the notifier (who alone can open it)."""

    purpose: Purpose
    token_hash: str
    expires_at: datetime
    sealed_link: str

    def admits(self, token_hash: str, now: datetime) -> bool:
        return hmac.compare_digest(self.token_hash, token_hash) and now < self.expires_at


class Account(Aggregate):
    id: UUID  # chosen by the application: links name the account

    @event("Claimed")
    def __init__(
        self,
        tenant_id: str,
        email: Personal,
        name: Personal,
        claimed_by: Literal["customer", "staff"],
        password_hash: Personal | None,
        language: str | None,
        link: EmailedLink,
        phone: Personal | None = None,
        address: dict[str, Any] | None = None,
    ) -> None:
        self.tenant_id = tenant_id
        self.email = email
        self.name = name
        self.phone = phone
        self.address = address
        self.language = language
        self.claimed_by = claimed_by
        self.password_hash = password_hash
        self.links: dict[str, EmailedLink] = {link.purpose: link}
        self.awaiting: Purpose | None = link.purpose  # the proof of the address still to come
        self.pending_email: Personal | None = None
        self.verified_at: datetime | None = None
        self.status = ACTIVE
        self.sessions_valid_from: datetime | None = None

    # ------------------------------------------------------------------------- facts

    @property
    def is_verified(self) -> bool:
        return self.verified_at is not None

    @property
    def is_active(self) -> bool:
        return self.status == ACTIVE

    @property
    def has_password(self) -> bool:
        return self.password_hash is not None and self.password_hash.value is not None

    def verification_purpose(self) -> Purpose | None:
        """Which verifying link the account is waiting to see followed, if any."""
        return self.awaiting

    def session_is_current(self, issued_at: datetime) -> bool:
        return self.sessions_valid_from is None or issued_at >= self.sessions_valid_from

    # ------------------------------------------------------------------ claims, links

    @event("ClaimRenewed")
    def renew_claim(self, link: EmailedLink) -> None:
        """Claimed again before anyone proved the address. No password chosen before the
        proof survives a competing claim (else whoever claimed last could hijack the account
        when the owner follows a link): the owner chooses one through the new link."""
        self.password_hash = None
        self.links = {link.purpose: link}
        self.awaiting = link.purpose

    def issue(self, link: EmailedLink) -> None:
        """Issue a new link; the previous link of the same purpose stops working."""
        self._require_active()
        if link.purpose in VERIFYING and link.purpose != self.verification_purpose():
            raise NothingToVerify("There is nothing to verify on this account.")
        if link.purpose == "magic_link":
            self.record_magic_link(link=link)
        elif link.purpose == "password_reset":
            self.record_password_reset_link(link=link)
        else:
            self.record_verification_link(link=link)

    @event("VerificationLinkReissued")
    def record_verification_link(self, link: EmailedLink) -> None:
        self.links[link.purpose] = link

    @event("MagicLinkIssued")
    def record_magic_link(self, link: EmailedLink) -> None:
        self.links[link.purpose] = link

    @event("PasswordResetLinkIssued")
    def record_password_reset_link(self, link: EmailedLink) -> None:
        self.links[link.purpose] = link

    def redeem(self, purposes: tuple[Purpose, ...], token_hash: str, now: datetime) -> Purpose:
        """The purpose of the live link this token belongs to (LinkRefused if none)."""
        if self.is_active:
            for purpose in purposes:
                link = self.links.get(purpose)
                if link is not None and link.admits(token_hash, now):
                    return purpose
        raise LinkRefused()

    # ------------------------------------------------------------------ verification

    def verify(self, token_hash: str, now: datetime, password_hash: Personal | None = None) -> Purpose:
        """Prove the address with the link sent to it.

        The first proof of a claimed address drops any password chosen before it: whoever
        claimed the address may not be whoever reads its mail (an attacker claiming a
        stranger's address with a password of their own would otherwise log in as soon as the
        owner clicks "Verify"). Whoever follows the link chooses the password (`password_hash`),
        or none and logs in with emailed links. A link to a new address of a verified account
        changes no password (`PasswordNotExpected` if one is given)."""
        purpose = self.redeem(("verify_email", "verify_new_email"), token_hash, now)
        if purpose == "verify_new_email":
            if password_hash is not None:
                raise PasswordNotExpected(
                    "This link confirms a new email address: it does not change the password."
                )
            assert self.pending_email is not None
            self.record_email_verified(email=self.pending_email, purpose=purpose, first_time=False, at=now)
            return purpose
        if self.password_hash is not None:
            self.record_unproven_password_discarded()
        self.record_email_verified(email=self.email, purpose=purpose, first_time=True, at=now)
        if password_hash is not None:
            self.record_password(password_hash=password_hash, via="verification")
        return purpose

    @event("UnprovenPasswordDiscarded")
    def record_unproven_password_discarded(self) -> None:
        """The password given with the claim (accounts claimed before this rule) is gone."""
        self.password_hash = None

    @event("EmailVerified")
    def record_email_verified(
        self, email: Personal, purpose: Purpose, first_time: bool, at: datetime
    ) -> None:
        self.email = email
        self.pending_email = None
        self.awaiting = None
        self.verified_at = self.verified_at or at
        for used in VERIFYING:  # the address is proven: every pending verifying link is spent
            self.links.pop(used, None)
        if purpose == "verify_new_email":  # links sent to the old address stop working
            for link in LOGGING_IN:
                self.links.pop(link, None)

    def change_email(self, new_email: Personal, link: EmailedLink) -> None:
        """A verified account changes address once the new one is proven (`verify` with the
        link sent to it); until then the old address stays in force."""
        self._require_active()
        if not self.is_verified:
            raise NothingToVerify("Verify the current email address first.")
        self.record_email_change_request(new_email=new_email, link=link)

    @event("EmailChangeRequested")
    def record_email_change_request(self, new_email: Personal, link: EmailedLink) -> None:
        self.pending_email = new_email
        self.awaiting = link.purpose
        self.links[link.purpose] = link

    def correct_email(self, email: Personal, link: EmailedLink) -> None:
        """Staff fix the address of an account nobody has proven yet: the link goes to the
        corrected address and earlier links stop working."""
        self._require_active()
        if self.is_verified:
            raise NothingToVerify("The address is verified: change it with a verification instead.")
        self.record_email_correction(email=email, link=link)

    @event("EmailCorrected")
    def record_email_correction(self, email: Personal, link: EmailedLink) -> None:
        self.email = email
        self.links = {link.purpose: link}
        self.awaiting = link.purpose

    # --------------------------------------------------------------------- passwords

    def set_password_by_link(self, token_hash: str, password_hash: Personal, now: datetime) -> Purpose:
        """Choose a password with an emailed link: a staff invitation (which also proves the
        address) or a reset (which ends every earlier session)."""
        purpose = self.redeem(("set_password", "password_reset"), token_hash, now)
        if purpose == "set_password":
            self.record_email_verified(email=self.email, purpose=purpose, first_time=True, at=now)
            self.record_password(password_hash=password_hash, via="invitation")
        else:
            self.record_password(password_hash=password_hash, via="reset")
            self.revoke_sessions(before=now, reason="password_reset")
        return purpose

    def change_password(self, password_hash: Personal, now: datetime) -> None:
        self._require_active()
        self.record_password(password_hash=password_hash, via="change")
        self.revoke_sessions(before=now, reason="password_changed")

    @event("PasswordSet")
    def record_password(
        self, password_hash: Personal, via: Literal["invitation", "verification", "reset", "change"]
    ) -> None:
        self.password_hash = password_hash
        if via == "invitation":
            self.links.pop("set_password", None)
        elif via in ("reset", "change"):  # every emailed way in that predates the new password
            for link in LOGGING_IN:
                self.links.pop(link, None)

    # ---------------------------------------------------------------------- sessions

    def log_in_by_link(self, token_hash: str, now: datetime) -> None:
        self.redeem(("magic_link",), token_hash, now)
        self.record_magic_link_used(at=now)

    @event("MagicLinkUsed")
    def record_magic_link_used(self, at: datetime) -> None:
        self.links.pop("magic_link", None)

    @event("SessionsRevoked")
    def revoke_sessions(
        self,
        before: datetime,
        reason: Literal["logout", "password_changed", "password_reset", "archived", "redacted"],
    ) -> None:
        self.sessions_valid_from = before

    # ----------------------------------------------------------------------- profile

    def change_profile(
        self, changes: dict[str, Any], source: Literal["customer", "staff", "booking"]
    ) -> None:
        """Change contact details (name, phone, address, language); only real changes count."""
        self._require_active()
        effective = {k: v for k, v in changes.items() if getattr(self, k) != v}
        if effective:
            self.record_profile_change(changes=effective, source=source)

    def fill_in(self, details: dict[str, Any]) -> None:
        """Details that arrived with a booking fill empty fields and never overwrite."""
        if self.is_active:
            empty = {k: v for k, v in details.items() if v is not None and _is_empty(getattr(self, k))}
            if empty:
                self.record_profile_change(changes=empty, source="booking")

    @event("ProfileChanged")
    def record_profile_change(self, changes: dict[str, Any], source: str) -> None:
        for field, value in changes.items():
            setattr(self, field, value)

    # ------------------------------------------------------------------- lifecycle

    def archive(self, now: datetime) -> None:
        if self.status == ARCHIVED:
            return
        self._require_active()
        self.record_archived()
        self.revoke_sessions(before=now, reason="archived")

    @event("Archived")
    def record_archived(self) -> None:
        self.status = ARCHIVED
        self.links = {}  # an unverified account keeps `awaiting`: a resend after activation
        if self.is_verified:
            self.awaiting = self.pending_email = None

    def activate(self) -> None:
        if self.status == REDACTED:
            raise AccountInactive("A redacted account cannot be activated.")
        if self.status == ARCHIVED:
            self.record_activated()

    @event("Activated")
    def record_activated(self) -> None:
        self.status = ACTIVE

    def redact(self, now: datetime) -> None:
        """Decide to erase the customer's personal data. The key is destroyed right after this
        is recorded (and again, until it is, by the erasure follower)."""
        if self.status == REDACTED:
            return
        self.record_redacted()
        self.revoke_sessions(before=now, reason="redacted")

    @event("Redacted")
    def record_redacted(self) -> None:
        erased = Personal(self.id, None)
        self.status = REDACTED
        self.email = self.name = erased
        self.phone = self.pending_email = self.password_hash = None
        self.address = None
        self.links = {}
        self.awaiting = None

    def _require_active(self) -> None:
        if not self.is_active:
            raise AccountInactive(f"This account is {self.status}.")


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, Personal) and not value.value)
