"""The platform operator's routes: give a tenant its staff members (API keys), list and remove
them. Nothing else: the admin token cannot read or change any customer's account."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import Depends, FastAPI, Request, Response
from pydantic import SecretStr

from backbone.http import run_sync
from backbone.readmodel import ReadModel
from services.accounts import views
from services.accounts.api import auth
from services.accounts.api.models import StaffMemberCreated, StaffMemberRequest, StaffMemberView, Tenant
from services.accounts.application import Accounts

STAFF = "/v1/admin/tenants/{tenant_id}/staff"


def routes(api: FastAPI, accounts: Accounts, read_model: ReadModel, token: SecretStr | None) -> None:
    as_admin = auth.admin(token)
    # Wrong tokens are throttled per client network (backbone.auth.admin).
    throttled = {429: {"description": "Too many wrong tokens from this network: try again later"}}

    @api.post(
        STAFF,
        status_code=201,
        response_model=StaffMemberCreated,
        tags=["admin"],
        summary="Add a staff member to a tenant; the answer holds their API key, shown this once",
        responses=throttled,
    )
    async def add(
        tenant_id: Tenant, body: StaffMemberRequest, request: Request, actor: str = Depends(as_admin)
    ) -> Any:
        with auth.cause(request, actor, tenant_id):
            staff_id, api_key = await run_sync(accounts.add_staff_member, tenant_id, body.label)
        return StaffMemberCreated(staff_id=staff_id, tenant_id=tenant_id, label=body.label, api_key=api_key)

    @api.get(
        STAFF,
        response_model=list[StaffMemberView],
        tags=["admin"],
        summary="A tenant's staff members",
        responses=throttled,
    )
    async def members(tenant_id: Tenant, _: str = Depends(as_admin)) -> Any:
        def read() -> Any:
            with read_model.engine.connect() as conn:
                return views.staff_members(conn, tenant_id)

        return await run_sync(read)

    @api.delete(
        STAFF + "/{staff_id}",
        status_code=204,
        tags=["admin"],
        summary="Remove a staff member: their API key stops working at once",
        responses={404: {}, **throttled},
    )
    async def remove(
        tenant_id: Tenant, staff_id: UUID, request: Request, actor: str = Depends(as_admin)
    ) -> Response:
        with auth.cause(request, actor, tenant_id):
            await run_sync(accounts.remove_staff_member, tenant_id, staff_id)
        return Response(status_code=204)
