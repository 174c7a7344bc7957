"""The platform operator's routes: give a tenant its staff members (API keys), list and remove
them. Nothing else: the admin token cannot read or change any customer's account."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request, Response

from backbone.http import run_sync
from services.accounts.api import auth
from services.accounts.api.auth import Admin, App, Queries
from services.accounts.api.models import StaffMemberCreated, StaffMemberRequest, StaffMemberView, Tenant

STAFF = "/v1/admin/tenants/{tenant_id}/staff"

# Wrong tokens are throttled per client network (backbone.auth.admin).
THROTTLED = {429: {"description": "Too many wrong tokens from this network: try again later"}}

router = APIRouter(tags=["admin"])


@router.post(
    STAFF,
    status_code=201,
    response_model=StaffMemberCreated,
    summary="Add a staff member to a tenant; the answer holds their API key, shown this once",
    responses=THROTTLED,
)
async def add(
    tenant_id: Tenant, body: StaffMemberRequest, request: Request, actor: Admin, accounts: App
) -> Any:
    with auth.cause(request, actor, tenant_id):
        staff_id, api_key = await run_sync(accounts.add_staff_member, tenant_id, body.label)
    return StaffMemberCreated(staff_id=staff_id, tenant_id=tenant_id, label=body.label, api_key=api_key)


@router.get(
    STAFF,
    response_model=list[StaffMemberView],
    summary="A tenant's staff members",
    responses=THROTTLED,
)
async def members(tenant_id: Tenant, _: Admin, queries: Queries) -> Any:
    return await run_sync(queries.staff_members, tenant_id)


@router.delete(
    STAFF + "/{staff_id}",
    status_code=204,
    summary="Remove a staff member: their API key stops working at once",
    responses={404: {}, **THROTTLED},
)
async def remove(
    tenant_id: Tenant, staff_id: UUID, request: Request, actor: Admin, accounts: App
) -> Response:
    with auth.cause(request, actor, tenant_id):
        await run_sync(accounts.remove_staff_member, tenant_id, staff_id)
    return Response(status_code=204)
