"""What the accounts service tells the others: its domain events as contract events."""

from __future__ import annotations

from collections.abc import Iterator

from backbone.bus import Outgoing
from backbone.follower import Recorded
from backbone.outbox import envelope
from contracts import accounts as contract
from contracts.envelope import Actor
from contracts.topics import ACCOUNTS_EVENTS
from services.accounts.application import Accounts
from services.accounts.domainmodel import Account, TenantSettings

SERVICE = "accounts"


def translator(app: Accounts):
    def translate(recorded: Recorded) -> Iterator[Outgoing]:
        event = recorded.event
        if isinstance(event, Account.Claimed):
            yield Outgoing(
                ACCOUNTS_EVENTS,
                contract.AccountClaimed(
                    **envelope(recorded, SERVICE, tenant_id=event.tenant_id),
                    account_id=event.originator_id,
                    email=app.sealed(event.email),
                    name=app.sealed(event.name),
                    claimed_by=event.claimed_by,
                    link=event.sealed_verification_link,
                    link_expires_at=event.verification_expires_at,
                ),
            )
        elif isinstance(event, Account.EmailVerified):
            account = app.repository.get(event.originator_id, version=event.originator_version)
            yield Outgoing(
                ACCOUNTS_EVENTS,
                contract.EmailVerified(
                    **envelope(recorded, SERVICE, tenant_id=account.tenant_id),
                    account_id=event.originator_id,
                    email=app.sealed(event.email),
                    name=app.sealed(account.name),
                    first_time=True,
                ),
            )
        elif isinstance(event, TenantSettings.Initialised | TenantSettings.Changed):
            settings = app.repository.get(event.originator_id, version=event.originator_version)
            values = settings.values
            yield Outgoing(
                ACCOUNTS_EVENTS,
                contract.TenantSettingsChanged(
                    **envelope(recorded, SERVICE, tenant_id=settings.tenant_id),
                    settings_version=settings.version,
                    changed_by=Actor.parse(event.meta.get("actor") or "service:accounts"),
                    **values,
                ),
            )

    return translate
