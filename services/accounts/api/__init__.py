"""The accounts service's HTTP API: customers (`customers.py`), the pages emailed links open
(`pages.py`), staff of a tenant (`staff.py`) and the platform operator (`admin.py`)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import SecretStr

from backbone.credentials import SessionSigner, SessionVerifier
from backbone.http import problem
from backbone.readmodel import ReadModel
from services.accounts.api import admin, customers, errors, pages, staff
from services.accounts.application import Accounts
from services.accounts.deferred import Deferred
from services.accounts.ratelimits import RateLimited, RateLimits, RateLimitsUnavailable


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

    @api.exception_handler(RateLimitsUnavailable)
    async def _rate_limits_unavailable(_: Request, error: RateLimitsUnavailable) -> JSONResponse:
        response = problem(503, "Service unavailable", str(error), code="rate_limits_unavailable")
        response.headers["Retry-After"] = str(error.retry_after)
        return response

    errors.handlers(api)
    customers.routes(api, accounts, signer, verifier, limits, deferred)
    pages.routes(api, accounts, signer, limits)
    staff.routes(api, accounts, read_model)
    admin.routes(api, accounts, read_model, admin_token)
    document_problems(api)


PROBLEM = {
    "title": "Problem",
    "description": "RFC 9457 problem details: what went wrong, in a sentence.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "description": "Machine-readable reason, e.g. weak_password"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}


def document_problems(api: FastAPI) -> None:
    """Say in the OpenAPI document what every error really is (backbone.http): a problem+json
    body, also for invalid requests (400 malformed JSON, 422 schema), never FastAPI's default."""
    generate = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema:
            return api.openapi_schema
        schema = generate()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        schemas["Problem"] = PROBLEM
        content = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if "requestBody" in operation:
                    responses.setdefault("400", {"description": "Malformed JSON"})
                if "security" in operation:
                    responses.setdefault("401", {"description": "Credentials missing, invalid or ended"})
                    responses.setdefault(
                        "403",
                        {"description": "Credentials of another business, or customer accounts are off"},
                    )
                if any(
                    p["in"] == "path" and p["name"] != "tenant_id" for p in operation.get("parameters", [])
                ):
                    responses.setdefault("404", {"description": "No such thing for this caller"})
                for status, response in responses.items():
                    if status.startswith("4"):
                        response["content"] = content
                        response.setdefault("description", "Refused")
                        if not response["description"]:
                            response["description"] = "Refused"
        api.openapi_schema = schema
        return schema

    api.openapi = openapi  # type: ignore[method-assign]
