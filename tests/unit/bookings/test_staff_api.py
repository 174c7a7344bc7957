"""Staff on the bookings staff API, in memory: keys announced by accounts admit their own
tenant only; list with filters; a booking with payments and cancellation; cancelling within
the rules, overriding them, with a refund due; the committed OpenAPI document."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest

from backbone.auth import staff_member
from backbone.credentials import new_token, parse_staff_api_key, staff_api_key
from backbone.http import create_api
from services.bookings import api_staff, openapi
from services.bookings.api_errors import REFUSALS
from services.bookings.reads import StaffReads
from services.bookings.staffkeys import StaffKey
from tests.support.bookings import pay, place
from tests.unit.bookings.conftest import TENANT


@pytest.fixture
async def staff(harness):
    app = create_api("bookings", "test", "test")
    # As services/bookings/bootstrap.py gives them.
    app.state.bookings = harness.app
    app.state.staff_reads = StaffReads(harness.reads)
    app.state.staff_member = staff_member(harness.app.staff_key)
    REFUSALS.install(app)
    app.include_router(api_staff.router)

    def key_of(tenant: str) -> dict[str, str]:
        key = staff_api_key(uuid.uuid4(), new_token())
        staff_id, key_hash = parse_staff_api_key(key)
        harness.app.save(StaffKey(id=staff_id, tenant_id=tenant, key_hash=key_hash))
        return {"Authorization": f"Bearer {key}"}

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://bookings"
    ) as client:
        client.key_of = key_of  # type: ignore[attr-defined]
        yield client


async def test_staff_list_filter_see_and_cancel_with_an_override(harness, staff):
    await harness.hear(
        harness.accounts.settings(allow_cancel=True, cancel_cutoff={"amount": 2, "unit": "days"})
    )
    soon = place(TENANT, "ada@example.com", starts_at=harness.now + timedelta(days=1))
    later = place(TENANT, "bob@example.com", starts_at=harness.now + timedelta(days=9))
    await harness.send(soon, later, pay(TENANT, soon["booking_id"], "40.00"))
    harness.project()
    url = f"/v1/staff/tenants/{TENANT}/bookings"
    headers = staff.key_of(TENANT)

    listed = (await staff.get(url, headers=headers)).json()
    assert listed["total"] == 2 and [b["booking_id"] for b in listed["bookings"]] == [
        later["booking_id"],
        soon["booking_id"],
    ]
    by_customer = (await staff.get(url, headers=headers, params={"customer": "ADA@"})).json()
    assert [b["customer_email"] for b in by_customer["bookings"]] == ["ada@example.com"]
    assert (await staff.get(url, headers=headers, params={"status": "STOP"})).json()["total"] == 0
    # One customer's page: their account's bookings and those made with their address, exactly.
    account = {"account_id": str(uuid.uuid4()), "account_email": "ADA@example.com"}
    mine = (await staff.get(url, headers=headers, params=account)).json()
    assert [b["booking_id"] for b in mine["bookings"]] == [soon["booking_id"]]
    near = {**account, "account_email": "da@example.com"}
    assert (await staff.get(url, headers=headers, params=near)).json()["total"] == 0

    detail = (await staff.get(f"{url}/{soon['booking_id']}", headers=headers)).json()
    assert "cancel" in detail, detail
    assert detail["cancel"]["reason_code"] == "cutoff_passed"
    assert [p["amount"] for p in detail["payments"]] == ["40.00"] and detail["cancellation"] is None
    body = {"booking_version": detail["version"], "refund_due": "25.00", "reason": "storm"}

    refused = await staff.post(f"{url}/{soon['booking_id']}/cancellation", headers=headers, json=body)
    assert refused.status_code == 409 and refused.json()["code"] == "cutoff_passed"
    too_much = {**body, "override_customer_rules": True, "refund_due": "41.00"}
    refused = await staff.post(f"{url}/{soon['booking_id']}/cancellation", headers=headers, json=too_much)
    assert refused.status_code == 409 and refused.json()["code"] == "refund_exceeds_paid"

    body["override_customer_rules"] = True
    done = await staff.post(f"{url}/{soon['booking_id']}/cancellation", headers=headers, json=body)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "STOP" and done.json()["refund_due"] == "25.00"
    assert "contact them to arrange your refund" in done.json()["refund_note"]
    again = await staff.post(f"{url}/{soon['booking_id']}/cancellation", headers=headers, json=body)
    assert again.status_code == 200 and again.json() == done.json()  # the same confirmation

    cancelled = (await staff.get(f"{url}/{soon['booking_id']}", headers=headers)).json()
    assert cancelled["cancellation"]["rules_overridden"] is True
    assert (
        cancelled["cancellation"]["refund_due"] == "25.00" and cancelled["cancellation"]["reason"] == "storm"
    )


async def test_keys_open_their_own_tenant_only(harness, staff):
    booking = place(TENANT, "ada@example.com", starts_at=harness.now + timedelta(days=3))
    await harness.send(booking)
    harness.project()
    url = f"/v1/staff/tenants/{TENANT}/bookings"
    assert (await staff.get(url)).status_code == 401
    forged = staff_api_key(uuid.uuid4(), new_token())
    assert (await staff.get(url, headers={"Authorization": f"Bearer {forged}"})).status_code == 401
    other = staff.key_of("another-business")
    assert (await staff.get(url, headers=other)).status_code == 403
    theirs = f"/v1/staff/tenants/another-business/bookings/{booking['booking_id']}"
    assert (await staff.get(theirs, headers=other)).status_code == 404


def test_the_committed_openapi_document_is_current_and_says_every_refusal():
    assert openapi.is_current(), "run `python -m services.bookings.openapi --write` and commit the file"
    for path, operations in openapi.document()["paths"].items():
        for method, operation in operations.items():
            assert "401" in operation["responses"] and "403" in operation["responses"], (path, method)
            for status, response in operation["responses"].items():
                if status.startswith("4"):
                    assert "application/problem+json" in response["content"], (path, method, status)
