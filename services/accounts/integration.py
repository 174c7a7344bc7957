"""What the accounts service tells the others: its domain events as contract events on
`accounts.events` (personal data sealed with the account's key, links sealed for the notifier).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from backbone.bus import Outgoing
from backbone.context import Cause
from backbone.follower import Recorded
from backbone.outbox import envelope
from contracts import accounts as contract
from contracts.envelope import Actor
from contracts.topics import ACCOUNTS_EVENTS
from services.accounts.application import Accounts
from services.accounts.domainmodel import Account
from services.accounts.tenants import StaffMember, TenantSettings

SERVICE = "accounts"


def translator(app: Accounts):
    def translate(recorded: Recorded) -> Iterator[Outgoing]:
        event = recorded.event
        if isinstance(event, TenantSettings.Initialised | TenantSettings.Changed):
            yield _settings(app, recorded)
            return
        if isinstance(event, StaffMember.Added | StaffMember.Removed):
            yield _staff(app, recorded)
            return
        if not isinstance(event, Account.Event):
            return
        # The account as it was right after this event: its tenant, name and addresses.
        account: Account = app.repository.get(event.originator_id, version=event.originator_version)
        base = {
            **envelope(recorded, SERVICE, tenant_id=account.tenant_id),
            "account_id": account.id,
        }
        message = _account_message(app, event, account, base)
        if message is not None:
            yield Outgoing(ACCOUNTS_EVENTS, message)

    return translate


def _account_message(app: Accounts, event: Any, account: Account, base: dict[str, Any]) -> Any:
    sealed = app.sealed
    if isinstance(event, Account.Claimed):
        return contract.AccountClaimed(
            **base,
            email=sealed(event.email),
            name=sealed(event.name),
            claimed_by=event.claimed_by,
            link=event.link.sealed_link,
            link_expires_at=event.link.expires_at,
            language=event.language,
        )
    if isinstance(
        event,
        Account.ClaimRenewed
        | Account.VerificationLinkReissued
        | Account.EmailChangeRequested
        | Account.EmailCorrected,
    ):
        to = account.pending_email if event.link.purpose == "verify_new_email" else account.email
        return contract.VerificationRequested(
            **base,
            email=sealed(to),
            name=sealed(account.name),
            purpose=event.link.purpose,
            link=event.link.sealed_link,
            link_expires_at=event.link.expires_at,
        )
    if isinstance(event, Account.MagicLinkIssued | Account.PasswordResetLinkIssued):
        kind = (
            contract.MagicLinkRequested
            if event.link.purpose == "magic_link"
            else contract.PasswordResetRequested
        )
        return kind(
            **base,
            email=sealed(account.email),
            name=sealed(account.name),
            link=event.link.sealed_link,
            link_expires_at=event.link.expires_at,
        )
    if isinstance(event, Account.EmailVerified):
        return contract.EmailVerified(
            **base, email=sealed(event.email), name=sealed(account.name), first_time=event.first_time
        )
    if isinstance(event, Account.SessionsRevoked):
        return contract.SessionsRevoked(**base, revoked_before=event.before, reason=event.reason)
    if isinstance(event, Account.ProfileChanged):
        return contract.ProfileChanged(
            **base, **_profile(app, event.changes), source=event.source, changed_by=_actor(event)
        )
    if isinstance(event, Account.Archived):
        return contract.AccountArchived(**base, archived_by=_actor(event))
    if isinstance(event, Account.Activated):
        return contract.AccountActivated(**base, activated_by=_actor(event))
    if isinstance(event, Account.Redacted):
        return contract.AccountRedacted(**base, redacted_by=_actor(event))
    return None  # PasswordSet, MagicLinkUsed: nothing other services need


def _profile(app: Accounts, changes: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for field, value in changes.items():
        if field in ("name", "phone"):
            fields[field] = app.sealed(value)
        elif field == "address" and value is not None:
            fields[field] = contract.Address(
                **{k: (v if k == "country" else app.sealed(v)) for k, v in value.items()}
            )
        elif field == "language":
            fields[field] = value
    return fields


def _settings(app: Accounts, recorded: Recorded) -> Outgoing:
    event = recorded.event
    settings = app.repository.get(event.originator_id, version=event.originator_version)
    return Outgoing(
        ACCOUNTS_EVENTS,
        contract.TenantSettingsChanged(
            **envelope(recorded, SERVICE, tenant_id=settings.tenant_id),
            settings_version=settings.version,
            changed_by=_actor(event),
            **settings.values,
        ),
    )


def _staff(app: Accounts, recorded: Recorded) -> Outgoing:
    """The other services' staff APIs accept the same keys: only the hash travels."""
    event = recorded.event
    member = app.repository.get(event.originator_id, version=event.originator_version)
    base = {**envelope(recorded, SERVICE, tenant_id=member.tenant_id), "staff_id": member.id}
    if isinstance(event, StaffMember.Added):
        return Outgoing(ACCOUNTS_EVENTS, contract.StaffMemberAdded(**base, key_hash=event.key_hash))
    return Outgoing(ACCOUNTS_EVENTS, contract.StaffMemberRemoved(**base))


def _actor(event: Any) -> Actor:
    actor = Cause.from_meta(getattr(event, "meta", None)).actor
    return Actor.parse(actor if ":" in actor else "service:accounts")
