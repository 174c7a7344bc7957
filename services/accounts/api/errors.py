"""HTTP statuses for the accounts' business refusals that carry none of their own (errors are
mapped here, at the edge, not in the domain)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from backbone.domain import DomainError
from backbone.http import problem
from services.accounts.domainmodel import PasswordNotExpected

STATUS: dict[type[DomainError], tuple[int, str]] = {
    PasswordNotExpected: (422, "Invalid request"),
}


def status_of(error: DomainError) -> int:
    return STATUS[type(error)][0] if type(error) in STATUS else error.http_status


def handlers(api: FastAPI) -> None:
    for kind, (status, title) in STATUS.items():

        async def refused(_: Request, error: Exception, status: int = status, title: str = title) -> JSONResponse:
            assert isinstance(error, DomainError)
            return problem(status, title, str(error), code=error.code)

        api.add_exception_handler(kind, refused)
