"""The HTTP edge every service shares (`backbone.http`): correlation ids in and out, the body
size limit and the safety net for bugs, in process."""

from __future__ import annotations

import uuid

import httpx
from fastapi import Request

from backbone.http import CORRELATION_HEADER, MAX_BODY_BYTES, create_api


def api():
    app = create_api("edge", "test", "test")

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, str]:
        return {"correlation_id": request.state.correlation_id}

    @app.get("/bug")
    async def bug() -> None:
        raise RuntimeError("a bug")

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge")


async def test_a_correlation_id_is_kept_or_made_and_always_answered():
    async with api() as client:
        given = str(uuid.uuid4())
        kept = await client.post("/echo", headers={CORRELATION_HEADER: given})
        assert kept.json() == {"correlation_id": given} and kept.headers[CORRELATION_HEADER] == given

        made = await client.post("/echo", headers={CORRELATION_HEADER: "not-a-uuid"})
        made_id = made.headers[CORRELATION_HEADER]
        assert made.json() == {"correlation_id": made_id} and str(uuid.UUID(made_id)) == made_id

        missing = await client.get("/nowhere")
        assert missing.status_code == 404 and uuid.UUID(missing.headers[CORRELATION_HEADER])


async def test_an_oversized_body_is_refused_before_the_route_reads_it():
    async with api() as client:
        response = await client.post("/echo", content=b"x" * (MAX_BODY_BYTES + 1))
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/problem+json"
        assert uuid.UUID(response.headers[CORRELATION_HEADER])


async def test_a_bug_is_a_500_problem_with_the_correlation_id_to_find_it_in_the_logs():
    async with api() as client:
        given = str(uuid.uuid4())
        response = await client.get("/bug", headers={CORRELATION_HEADER: given})
        assert response.status_code == 500
        assert response.json()["correlation_id"] == given == response.headers[CORRELATION_HEADER]
        assert "a bug" not in response.text
        assert (await client.post("/echo")).status_code == 200  # and the next request is served
