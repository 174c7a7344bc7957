"""The platform operator's routes on bookings: register, list and revoke command publishers'
keys (`services.bookings.publishers`). Nothing else: the admin token reads no booking."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from backbone import context
from backbone.http import run_sync
from services.bookings import publishers
from services.bookings.api_staff import App
from services.bookings.publishers import PublisherRequest, PublisherView

PUBLISHERS = "/v1/admin/publishers"

_bearer = HTTPBearer(auto_error=False)


async def _admin(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    # backbone.auth.admin, made once by the composition root (its throttle counts across requests).
    return await request.app.state.admin(request, credentials)


Admin = Annotated[str, Depends(_admin)]  # the actor, service:admin

router = APIRouter(tags=["admin"])


@router.post(
    PUBLISHERS,
    status_code=201,
    response_model=PublisherView,
    summary="Register a command publisher's public key, bound to tenants and capabilities",
)
async def register(body: PublisherRequest, request: Request, actor: Admin, bookings: App) -> PublisherView:
    with context.caused_by(actor, None, request.state.correlation_id):
        return await run_sync(publishers.register, bookings, body)


@router.delete(
    PUBLISHERS + "/{key_id}",
    response_model=PublisherView,
    summary="Revoke a publisher key: its commands are refused from now on",
)
async def revoke(key_id: str, request: Request, actor: Admin, bookings: App) -> PublisherView:
    with context.caused_by(actor, None, request.state.correlation_id):
        revoked = await run_sync(publishers.revoke, bookings, key_id)
    if revoked is None:
        raise HTTPException(404, "No publisher key has this id.")
    return revoked
