"""The accounts service's HTTP API: customers (`customers.py`), the pages emailed links open
(`pages.py`), staff of a tenant (`staff.py`) and the platform operator (`admin.py`), each a
module-level router; who calls and what the routes are given in `auth.py`; how refusals are
answered in `errors.py`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from services.accounts.api import admin, customers, pages, staff
from services.accounts.api.errors import REFUSALS

ROUTERS = (customers.router, pages.router, staff.router, admin.router)


def install(api: FastAPI) -> None:
    """The routes (each audience its module-level router), the one table that answers
    refusals (`errors.REFUSALS`), and an OpenAPI document that says so. What the routes are
    given comes from `api.state`, filled by the composition root (see `auth`)."""
    REFUSALS.install(api)
    for router in ROUTERS:
        api.include_router(router)
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
