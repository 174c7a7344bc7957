"""Staff routes, under /v1/staff/tenants/{tenant_id}: a staff member's API key works for its
own tenant only; each change is recorded with `staff:<id>` as its actor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response

from backbone.http import NotFound, run_sync
from backbone.logging import mask_email
from services.accounts import history, views
from services.accounts.api import auth
from services.accounts.api.auth import App, Queries, Staff
from services.accounts.api.models import (
    AccountDetail,
    AccountEdit,
    AccountSummary,
    BlockedEntry,
    BlockRequest,
    CreateAccount,
    Created,
    DirectoryPage,
    Settings,
    SettingsChange,
    SettingsChangeEntry,
    Tenant,
)
from services.accounts.application import Accounts

ACCOUNT = "/v1/staff/tenants/{tenant_id}/accounts/{account_id}"


router = APIRouter(tags=["staff"])

# ------------------------------------------------------------------ settings


@router.get(
    "/v1/staff/tenants/{tenant_id}/settings",
    response_model=Settings,
    summary="The tenant's customer-account settings",
)
async def get_settings(tenant_id: Tenant, _: Staff, accounts: App) -> Any:
    return await run_sync(accounts.settings, tenant_id)


@router.patch(
    "/v1/staff/tenants/{tenant_id}/settings",
    response_model=Settings,
    summary="Change some of the tenant's customer-account settings",
)
async def change_settings(
    tenant_id: Tenant, body: SettingsChange, request: Request, actor: Staff, accounts: App
) -> Any:
    with auth.cause(request, actor, tenant_id):
        return await run_sync(accounts.change_settings, tenant_id, body.model_dump(exclude_none=True))


@router.get(
    "/v1/staff/tenants/{tenant_id}/settings/history",
    response_model=list[SettingsChangeEntry],
    summary="Every change of the settings: who changed what, when",
)
async def settings_history(tenant_id: Tenant, _: Staff, accounts: App) -> Any:
    events = await run_sync(accounts.settings_history, tenant_id)
    return [
        {**history.entry(e), "changes": getattr(e, "changes", {})}
        for e in events
        if type(e).__name__ == "Changed"
    ]


# ------------------------------------------------------------------ directory


@router.get(
    "/v1/staff/tenants/{tenant_id}/accounts",
    response_model=DirectoryPage,
    summary="List and search the tenant's customer accounts",
)
async def directory(
    tenant_id: Tenant,
    _: Staff,
    queries: Queries,
    status: Annotated[views.Filter, Query(description="claimed = verified by the customer")] = "all",
    q: Annotated[
        str | None,
        Query(
            max_length=100,
            description="Words that begin words of the email, name or phone (all must match): "
            "'ada lov' finds Ada Lovelace, 'lovelace@exa' ada.lovelace@example.com, '660 12' "
            "+43 660 123. Not the middle of a word.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Any:
    total, rows = await run_sync(queries.search, tenant_id, status, q, limit, offset)
    return DirectoryPage(
        total=total, limit=limit, offset=offset, items=[AccountSummary.model_validate(r) for r in rows]
    )


@router.post(
    "/v1/staff/tenants/{tenant_id}/accounts",
    status_code=201,
    response_model=Created,
    summary="Create an account for a customer (they set a password through the emailed link)",
    responses={409: {"description": "The address has an account already, or is blocklisted"}},
)
async def create_account(
    tenant_id: Tenant, body: CreateAccount, request: Request, actor: Staff, accounts: App
) -> Created:
    details = body.model_dump(exclude={"email", "name"}, exclude_none=True)
    with auth.cause(request, actor, tenant_id):
        account_id = await run_sync(accounts.create_account, tenant_id, body.email, body.name, details)
    return Created(account_id=account_id)


@router.get(ACCOUNT, response_model=AccountDetail, summary="One account, with its history")
async def account(tenant_id: Tenant, account_id: UUID, _: Staff, accounts: App, queries: Queries) -> Any:
    def read() -> dict[str, Any]:
        events = accounts.account_history(tenant_id, account_id)  # NotFound outside the tenant
        row = queries.account(tenant_id, account_id)
        if row is None:  # recorded, not projected yet: a moment
            raise NotFound("No such account (yet): try again in a moment.")
        return {**row, "history": [history.entry(e) for e in events]}

    return await run_sync(read)


@router.patch(
    ACCOUNT,
    response_model=AccountSummary,
    summary="Edit contact details",
    responses={
        409: {"description": "The address is another account's or blocklisted; or the account is not active"}
    },
)
async def edit(
    tenant_id: Tenant,
    account_id: UUID,
    body: AccountEdit,
    request: Request,
    actor: Staff,
    accounts: App,
    queries: Queries,
) -> Any:
    with auth.cause(request, actor, tenant_id):
        account = await run_sync(accounts.edit_account, tenant_id, account_id, body.changes())
    await run_sync(queries.until_shown, account.id, account.version)  # their next page shows it
    return summary(account)


def _account_action(path: str, name: str, summary_text: str, use: Callable[[Accounts], Any]) -> None:
    """A change of an account's state by staff, answered with the account (`use` picks the
    use case from the application)."""

    @router.post(
        ACCOUNT + path,
        response_model=AccountSummary,
        summary=summary_text,
        name=name,
        responses={404: {}, 409: {}},
    )
    async def act(
        tenant_id: Tenant, account_id: UUID, request: Request, actor: Staff, accounts: App, queries: Queries
    ) -> Any:
        with auth.cause(request, actor, tenant_id):
            account = await run_sync(use(accounts), tenant_id, account_id)
        await run_sync(queries.until_shown, account.id, account.version)  # their next page shows it
        return summary(account)


_account_action(
    "/verification-requests",
    "resend_verification",
    "Send the account's pending verification (or invitation) link again",
    lambda accounts: accounts.resend_verification,
)
_account_action(
    "/archive", "archive", "Archive: no more logins (bookings stay)", lambda accounts: accounts.archive
)
_account_action(
    "/activation", "activate", "Activate an archived account again", lambda accounts: accounts.activate
)


@router.post(
    ACCOUNT + "/redaction",
    status_code=204,
    summary="Redact: erase the customer's personal data everywhere (cannot be undone)",
    responses={404: {}},
)
async def redact(
    tenant_id: Tenant, account_id: UUID, request: Request, actor: Staff, accounts: App
) -> Response:
    with auth.cause(request, actor, tenant_id):
        await run_sync(accounts.redact, tenant_id, account_id)
    return Response(status_code=204)


# ------------------------------------------------------------------ blocklist


@router.get(
    "/v1/staff/tenants/{tenant_id}/blocklist",
    response_model=list[BlockedEntry],
    summary="Blocklisted email addresses (masked)",
)
async def blocklist(tenant_id: Tenant, _: Staff, queries: Queries) -> Any:
    return await run_sync(queries.blocked_emails, tenant_id)


@router.post(
    "/v1/staff/tenants/{tenant_id}/blocklist",
    status_code=201,
    response_model=BlockedEntry,
    summary="Blocklist an email address: it cannot claim an account",
)
async def block(tenant_id: Tenant, body: BlockRequest, request: Request, actor: Staff, accounts: App) -> Any:
    with auth.cause(request, actor, tenant_id):
        entry_id = await run_sync(accounts.block_email, tenant_id, body.email)
    return BlockedEntry(
        entry_id=entry_id, hint=mask_email(body.email), changed_at=accounts.clock(), changed_by=actor
    )


@router.delete(
    "/v1/staff/tenants/{tenant_id}/blocklist/{entry_id}",
    status_code=204,
    summary="Take an address off the blocklist",
    responses={404: {}},
)
async def unblock(
    tenant_id: Tenant, entry_id: UUID, request: Request, actor: Staff, accounts: App
) -> Response:
    with auth.cause(request, actor, tenant_id):
        await run_sync(accounts.unblock_email, tenant_id, entry_id)
    return Response(status_code=204)


def summary(account: Any) -> AccountSummary:
    return AccountSummary(
        account_id=account.id,
        email=account.email.value,
        name=account.name.value,
        phone=account.phone.value if account.phone else None,
        status=account.status,
        verified=account.is_verified,
        claimed_by=account.claimed_by,
        created_at=account.created_on,
        verified_at=account.verified_at,
    )
