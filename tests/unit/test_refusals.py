"""Refusals are answered at the edge only: each service's one table (`backbone.http.Refusals`)
gives every kind of refusal its status and problem body; the domain and application modules
name no HTTP status and import nothing of HTTP."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import httpx
import pytest

from backbone.domain import DomainError
from backbone.http import Refusal, Refusals, create_api
from services.accounts.api.errors import REFUSALS as ACCOUNTS
from services.bookings.api_errors import REFUSALS as BOOKINGS
from services.notifier.api import REFUSALS as NOTIFIER

ROOT = Path(__file__).resolve().parents[2]


class Taken(DomainError):
    code = "taken"


class TakenHere(Taken):
    pass


class Coded(DomainError):
    pass


class Busy(Exception):
    retry_after = 7


class Unnamed(DomainError):
    code = "unnamed"


def client(table: Refusals, error: Exception) -> httpx.AsyncClient:
    app = create_api("refusals", "test", "test")
    table.install(app)

    @app.get("/refuse")
    async def refuse() -> None:
        raise error

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge")


TABLE = Refusals(
    {
        Taken: Refusal(403),
        Coded: Refusal(lambda e: 422 if e.code == "of_the_request" else 409, "Not allowed"),
        Busy: Refusal(
            429, "Too many requests", code="busy", headers=lambda e: {"Retry-After": str(e.retry_after)}
        ),
    }
)


@pytest.mark.parametrize(
    ("error", "status", "body", "headers"),
    [
        (Taken("It is taken."), 403, {"title": "Refused", "code": "taken"}, {}),
        (TakenHere("Here too."), 403, {"title": "Refused", "code": "taken"}, {}),  # as its base
        (Coded("Asked wrong.", code="of_the_request"), 422, {"title": "Not allowed"}, {}),
        (Coded("Not now.", code="state"), 409, {"title": "Not allowed", "code": "state"}, {}),
        (Busy("Later."), 429, {"code": "busy"}, {"retry-after": "7"}),
        (Unnamed("No table names it."), 409, {"title": "Refused", "code": "unnamed"}, {}),
    ],
)
async def test_each_kind_of_refusal_gets_the_answer_its_table_gives(error, status, body, headers):
    async with client(TABLE, error) as http:
        response = await http.get("/refuse")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    answer = response.json()
    assert answer["status"] == status and answer["detail"] == str(error) and answer["type"] == "about:blank"
    assert body.items() <= answer.items()
    assert headers.items() <= response.headers.items()


def _kinds_defined_in(package: str) -> set[type[DomainError]]:
    for module in pkgutil.walk_packages(importlib.import_module(package).__path__, f"{package}."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    found, todo = set(), [DomainError]
    while todo:
        for kind in todo.pop().__subclasses__():
            todo.append(kind)
            if kind.__module__.startswith(package):
                found.add(kind)
    return found


@pytest.mark.parametrize(
    ("package", "table"),
    [("services.accounts", ACCOUNTS), ("services.bookings", BOOKINGS), ("services.notifier", NOTIFIER)],
)
def test_every_refusal_a_service_defines_is_in_its_edge_table_and_carries_no_status(package, table):
    kinds = _kinds_defined_in(package)
    assert kinds, package
    for kind in kinds:
        assert not hasattr(kind, "http_status"), kind
        assert any(issubclass(kind, named) for named in table.table), f"{kind} is not in {package}'s table"
    assert not hasattr(DomainError, "http_status")


@pytest.mark.parametrize("service", ["accounts", "bookings", "notifier"])
def test_domain_and_application_modules_import_nothing_of_http(service):
    http = ("fastapi", "starlette", "backbone.http", "backbone.auth")
    for name in ("domainmodel", "application", "errors", "customers", "backoffice", "core", "directory"):
        path = ROOT / "services" / service / f"{name}.py"
        if not path.exists():
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom | ast.Import):
                modules = (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                )
                assert not any(m.startswith(http) for m in modules), (path.name, modules)
