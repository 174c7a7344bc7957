"""The platform operator's routes on bookings: register, list and revoke command publishers'
keys (`services.bookings.publishers`). Nothing else: the admin token reads no booking."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import SecretStr

from backbone import context
from backbone.auth import admin
from backbone.http import run_sync
from services.bookings import publishers
from services.bookings.application import Bookings
from services.bookings.publishers import PublisherRequest, PublisherView

PUBLISHERS = "/v1/admin/publishers"


def router(bookings: Bookings, token: SecretStr | None) -> APIRouter:
    as_admin = Depends(admin(token))
    routes = APIRouter(tags=["admin"])

    @routes.post(
        PUBLISHERS,
        status_code=201,
        response_model=PublisherView,
        summary="Register a command publisher's public key, bound to tenants and capabilities",
    )
    async def register(body: PublisherRequest, request: Request, actor: str = as_admin) -> PublisherView:
        with context.caused_by(actor, None, request.state.correlation_id):
            return await run_sync(publishers.register, bookings, body)

    @routes.delete(
        PUBLISHERS + "/{key_id}",
        response_model=PublisherView,
        summary="Revoke a publisher key: its commands are refused from now on",
    )
    async def revoke(key_id: str, request: Request, actor: str = as_admin) -> PublisherView:
        with context.caused_by(actor, None, request.state.correlation_id):
            revoked = await run_sync(publishers.revoke, bookings, key_id)
        if revoked is None:
            raise HTTPException(404, "No publisher key has this id.")
        return revoked

    return routes
