"""M2: an oversized body sent without a Content-Length.

The body limit (256 KiB) used to be checked against the Content-Length header only: a body
sent chunked has none, and 2 MiB of it was read, buffered and parsed."""

from __future__ import annotations

import json

import httpx
import pytest

from backbone.http import MAX_BODY_BYTES
from tests.security.conftest import TENANT, client_headers

pytestmark = pytest.mark.integration

TWO_MIB = 2 * 1024 * 1024


def chunks(total: int, size: int = 64 * 1024):
    """A JSON body, streamed in chunks: httpx sends it with Transfer-Encoding: chunked."""
    yield b'{"email": "big@example.com", "name": "'
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}'


def test_a_chunked_2_mib_body_is_refused_with_413(system):
    response = httpx.post(
        f"{system.accounts.url}/v1/tenants/{TENANT}/accounts",
        content=chunks(TWO_MIB),
        headers={"Content-Type": "application/json", **client_headers()},
        timeout=60,
    )
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == f"The body must be at most {MAX_BODY_BYTES} bytes."


def test_a_chunked_form_to_a_page_is_refused_too(system):
    response = httpx.post(
        f"{system.accounts.url}/verify-email",
        content=(b"token=" + b"x" * 65536 for _ in range(40)),
        headers={"Content-Type": "application/x-www-form-urlencoded", **client_headers()},
        timeout=60,
    )
    assert response.status_code == 413


def test_a_declared_oversized_body_is_refused_before_it_is_read(system):
    body = json.dumps({"email": "big@example.com", "name": "x" * TWO_MIB}).encode()
    response = httpx.post(
        f"{system.accounts.url}/v1/tenants/{TENANT}/accounts",
        content=body,
        headers={"Content-Type": "application/json", **client_headers()},
        timeout=60,
    )
    assert response.status_code == 413 and response.json()["title"] == "Payload too large"


def test_a_body_under_the_limit_is_read_as_usual(system):
    response = httpx.post(
        f"{system.accounts.url}/v1/tenants/{TENANT}/accounts",
        content=chunks(MAX_BODY_BYTES // 2),
        headers={"Content-Type": "application/json", **client_headers()},
        timeout=60,
    )
    assert response.status_code == 422  # read whole, then refused by the schema (name too long)
