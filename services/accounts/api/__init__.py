"""The accounts service's HTTP API: customers (`customers.py`), the pages emailed links open
(`pages.py`), staff of a tenant (`staff.py`) and the platform operator (`admin.py`)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import SecretStr

from backbone.credentials import SessionSigner, SessionVerifier
from backbone.http import problem
from backbone.readmodel import ReadModel
from services.accounts.api import admin, customers, pages, staff
from services.accounts.application import Accounts
from services.accounts.deferred import Deferred
from services.accounts.ratelimits import RateLimited, RateLimits


def routes(
    api: FastAPI,
    accounts: Accounts,
    read_model: ReadModel,
    signer: SessionSigner,
    verifier: SessionVerifier,
    limits: RateLimits,
    deferred: Deferred,
    admin_token: SecretStr | None,
) -> None:
    @api.exception_handler(RateLimited)
    async def _rate_limited(_: Request, error: RateLimited) -> JSONResponse:
        response = problem(429, "Too many requests", str(error), code="rate_limited")
        response.headers["Retry-After"] = str(error.retry_after)
        return response

    customers.routes(api, accounts, signer, verifier, limits, deferred)
    pages.routes(api, accounts, signer, limits)
    staff.routes(api, accounts, read_model)
    admin.routes(api, accounts, read_model, admin_token)
