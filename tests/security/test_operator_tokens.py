"""Lower: the admin and audit tokens had no minimum length and no throttling: a short token
could be guessed, and nothing slowed a guesser down."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from backbone.settings import MIN_TOKEN_LENGTH, ServiceSettings
from services.accounts.settings import AccountsSettings
from tests.security.conftest import client_headers
from tests.support.system import admin_headers

pytestmark = pytest.mark.integration

KEY = base64.b64encode(bytes(32)).decode()


def test_a_service_refuses_to_start_with_a_short_operator_token():
    with pytest.raises(ValidationError, match="ADMIN_API_TOKEN must be at least 32"):
        AccountsSettings(notifier_public_key=KEY, admin_api_token="letmein")
    with pytest.raises(ValidationError, match="AUDIT_API_TOKEN must be at least 32"):
        ServiceSettings(audit_api_token="x" * (MIN_TOKEN_LENGTH - 1))
    assert AccountsSettings(notifier_public_key=KEY, admin_api_token="").admin_api_token is not None  # off
    assert ServiceSettings(audit_api_token="x" * MIN_TOKEN_LENGTH).audit_api_token is not None


def test_guessing_the_admin_token_is_throttled_per_client(system, api):
    guesser = client_headers("203.0.113.99")
    answers = [
        api.get("/v1/admin/tenants/harbour-cruises/staff", headers={**guesser, "Authorization": f"Bearer guess-{i}"})
        for i in range(21)
    ]
    assert [a.status_code for a in answers] == [401] * 20 + [429]
    assert int(answers[-1].headers["retry-after"]) >= 1
    # The right token from the same client waits too; from elsewhere it works.
    assert api.get("/v1/admin/tenants/harbour-cruises/staff", headers={**guesser, **admin_headers()}).status_code == 429
    elsewhere = client_headers("203.0.113.100")
    assert api.get("/v1/admin/tenants/harbour-cruises/staff", headers={**elsewhere, **admin_headers()}).status_code == 200
