"""Property-based tests of the accounts API with schemathesis, against the running service.

Requests are generated from the committed OpenAPI document (docs/api/accounts.openapi.json),
valid and invalid ones, with and without credentials, and every answer must be what the
document says: never a 500, a documented status, a documented content type (problem+json for
every error) and body. With credentials (a customer's session, a staff member's key for the
tenant in the path, the admin token), the generated requests get past authentication and
reach the use cases.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.system import (
    System,
    admin_headers,
    set_tenant_settings,
    staff_headers,
    verified_customer,
)

pytestmark = pytest.mark.integration

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "api" / "accounts.openapi.json"
TENANT = "fuzzed-tours"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

schema = schemathesis.openapi.from_path(DOCUMENT)


@pytest.fixture(scope="module")
def system(tmp_path_factory, kafka_bootstrap_servers):
    system = System(tmp_path_factory.mktemp("fuzz"), kafka_bootstrap_servers, smtp_port=1)
    system.start("accounts")
    set_tenant_settings(system, TENANT, customer_logins_enabled=True)
    system.customer = verified_customer(system, None, TENANT, "fuzzed@example.com")  # type: ignore[attr-defined]
    yield system
    system.stop()
    assert system.accounts.errors() == [], "the service logged errors"


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_every_answer_is_the_documented_one_and_never_a_500(case, system):
    path = case.operation.path
    # Half of the requests reach the tenant the credentials are for; the others do not.
    if "tenant_id" in (case.path_parameters or {}) and zlib.crc32(repr(case.body).encode()) % 2:
        case.path_parameters["tenant_id"] = TENANT
    # Credentials, where the generated request has none (set on the case, so that schemathesis
    # knows the request is now a valid one).
    credentials = {}
    if path.startswith("/v1/staff/"):
        credentials = staff_headers(system, TENANT)
    elif path.startswith("/v1/admin/"):
        credentials = admin_headers()
    elif path.startswith("/v1/me"):
        credentials = system.customer
    if credentials and "Authorization" not in (case.headers or {}):
        case.headers = {**(case.headers or {}), **credentials}
    response = case.call(base_url=system.accounts.url, timeout=30)
    case.validate_response(response, checks=CHECKS)
