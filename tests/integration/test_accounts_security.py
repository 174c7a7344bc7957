"""Security of the accounts service, end to end on a real broker: token guessing, replay and
expiry; no account enumeration; nobody reaches another's account (IDOR); rate limits."""

from __future__ import annotations

import base64
import json
import secrets
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from backbone.credentials import AUDIENCE, ISSUER
from tests.support.system import (
    GENEROUS_CLIENT_LIMITS,
    System,
    set_tenant_settings,
    staff_headers,
    verified_customer,
    wait_for_link,
)

pytestmark = pytest.mark.integration

TENANT, OTHER_TENANT = "fjord-tours", "glacier-walks"
PASSWORD = "kayak-at-dawn-on-a-still-lake"
LIMITS = json.loads(GENEROUS_CLIENT_LIMITS) | {"magic_link.client": "3/minute", "link.client": "20/minute"}


@pytest.fixture(scope="module")
def system(tmp_path_factory, kafka_bootstrap_servers):
    system = System(
        tmp_path_factory.mktemp("security"),
        kafka_bootstrap_servers,
        smtp_port=1,
        overrides={"accounts": {"PASSWORD_RESET_TTL": "PT3S", "RATE_LIMITS": json.dumps(LIMITS)}},
    )
    system.start("accounts")
    for tenant in (TENANT, OTHER_TENANT):
        set_tenant_settings(system, tenant, customer_logins_enabled=True)
    yield system
    system.stop()
    assert system.accounts.errors() == []


def client_headers(ip: str | None = None) -> dict[str, str]:
    """Each test speaks as a client of its own (the service trusts X-Forwarded-For from
    127.0.0.1, as it would from a proxy in front of it)."""
    return {"X-Forwarded-For": ip or f"198.51.100.{secrets.randbelow(250) + 1}"}


@pytest.fixture
def api(system):
    with httpx.Client(base_url=system.accounts.url, timeout=30, headers=client_headers()) as client:
        yield client


def new_email(prefix: str = "s") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.com"


def refusal(response: httpx.Response) -> tuple[int, str, dict]:
    body = response.json()
    return response.status_code, response.headers["content-type"], body


def test_guessed_replayed_and_expired_tokens_are_refused_alike(system, api):
    email = new_email("tok")
    api.post(f"/v1/tenants/{TENANT}/accounts", json={"email": email, "name": "Tok", "password": PASSWORD})
    link = wait_for_link(system, email, "verify_email")
    account_id, secret = link.token.split(".")
    assert len(base64.urlsafe_b64decode(secret + "=")) == 32  # 256 random bits

    guesses = [
        f"{uuid.uuid4()}.{secrets.token_urlsafe(32)}",  # nobody
        f"{account_id}.{secrets.token_urlsafe(32)}",  # the right account, a guessed secret
        f"{account_id}.{secret[:-4]}AAAA",  # nearly right
        f"{account_id}.{secret}x",
        f"{account_id}",
    ]
    answers = {json.dumps(refusal(api.post("/v1/email-verifications", json={"token": t}))) for t in guesses}
    assert len(answers) == 1
    [(status, content_type, body)] = [json.loads(a) for a in answers]
    assert status == 400 and content_type == "application/problem+json" and body["code"] == "link_invalid"

    verification = {"token": link.token, "password": PASSWORD}
    assert api.post("/v1/email-verifications", json=verification).status_code == 200
    replayed = api.post("/v1/email-verifications", json={"token": link.token})
    assert json.dumps(refusal(replayed)) in answers

    # A reset link lives 3 seconds here: after that it opens nothing.
    assert api.post(f"/v1/tenants/{TENANT}/password-resets", json={"email": email}).status_code == 202
    reset = wait_for_link(system, email, "password_reset")
    time.sleep(3.5)
    expired = api.post(
        "/v1/new-passwords", json={"token": reset.token, "password": "a-new-long-passphrase-1"}
    )
    assert json.dumps(refusal(expired)) in answers
    assert (
        api.post(f"/v1/tenants/{TENANT}/sessions", json={"email": email, "password": PASSWORD}).status_code
        == 200
    )


def test_guessing_is_slowed_down_per_client(system, api):
    headers = client_headers("203.0.113.77")
    for _ in range(20):
        token = f"{uuid.uuid4()}.{secrets.token_urlsafe(32)}"
        assert api.post("/v1/magic-link-sessions", json={"token": token}, headers=headers).status_code == 400
    limited = api.post("/v1/magic-link-sessions", json={"token": "x" * 40}, headers=headers)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert limited.json()["code"] == "rate_limited"
    other = api.post(
        "/v1/magic-link-sessions", json={"token": "x" * 40}, headers=client_headers("203.0.113.78")
    )
    assert other.status_code == 400


def test_known_and_unknown_addresses_get_the_same_answers(system, api):
    known = new_email("known")
    verified_customer(system, None, TENANT, known, PASSWORD)
    pending = new_email("pending")
    api.post(f"/v1/tenants/{TENANT}/accounts", json={"email": pending, "name": "P", "password": PASSWORD})
    timings: dict[str, list[float]] = {}

    def answer(path: str, body: dict, kind: str) -> tuple:
        started = time.perf_counter()
        response = api.post(path, json=body, headers=client_headers())
        timings.setdefault(f"{path.rsplit('/', 1)[1]}:{kind}", []).append(time.perf_counter() - started)
        headers = {k: v for k, v in response.headers.items() if k not in ("x-correlation-id", "date")}
        return response.status_code, response.text, sorted(headers.items())

    for _ in range(3):
        for kind, email in (("known", known), ("pending", pending), ("unknown", new_email("nobody"))):
            same = {
                "claim": answer(
                    f"/v1/tenants/{TENANT}/accounts",
                    {"email": email, "name": "X", "password": PASSWORD},
                    kind,
                ),
                "verification": answer(f"/v1/tenants/{TENANT}/verification-requests", {"email": email}, kind),
                "magic": answer(f"/v1/tenants/{TENANT}/magic-links", {"email": email}, kind),
                "reset": answer(f"/v1/tenants/{TENANT}/password-resets", {"email": email}, kind),
                "login": answer(
                    f"/v1/tenants/{TENANT}/sessions", {"email": email, "password": "wrong-" + PASSWORD}, kind
                ),
            }
            if kind == "known":
                expected = same
            assert same == expected, kind
    assert expected["claim"][0] == 202 and expected["login"][0] == 401

    # The timings, for the record (the benchmark script measures them properly).
    for name, values in sorted(timings.items()):
        print(f"{name:<28} median {statistics.median(values) * 1000:7.1f} ms  (n={len(values)})")
    # The known address got mail because of all this; the unknown ones could not.
    assert wait_for_link(system, known, "magic_link").account_id


def test_a_customer_reaches_only_their_own_account(system, api):
    alice, bob = new_email("alice"), new_email("bob")
    as_alice = verified_customer(system, None, TENANT, alice, PASSWORD)
    as_bob = verified_customer(system, None, TENANT, bob, PASSWORD)
    as_carol = verified_customer(system, None, OTHER_TENANT, new_email("carol"), PASSWORD)
    alice_id = api.get("/v1/me", headers=as_alice).json()["account_id"]
    bob_id = api.get("/v1/me", headers=as_bob).json()["account_id"]
    assert api.get("/v1/me", headers=as_bob).json()["email"] == bob

    # A token for Bob's account can only come from accounts' signing key.
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": bob_id,
        "tid": TENANT,
        "sid": "x",
        "iat": int(time.time()),
        "exp": int(time.time()) + 600,
    }
    forged = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA")
    unsigned = jwt.encode(claims, key=None, algorithm="none")
    header, _, signature = as_alice["Authorization"].removeprefix("Bearer ").split(".")
    swapped = f"{header}.{_b64(claims)}.{signature}"  # Alice's signature over Bob's claims
    for token in (forged, unsigned, swapped, f"{as_alice['Authorization'].removeprefix('Bearer ')}x"):
        response = api.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, token

    # Alice's session changes Alice's account, whatever her body says.
    assert api.patch("/v1/me", headers=as_alice, json={"account_id": bob_id}).status_code == 422
    assert api.patch("/v1/me", headers=as_alice, json={"name": "Alice"}).json()["account_id"] == alice_id
    assert api.get("/v1/me", headers=as_bob).json()["name"] == "Customer"
    # Taking Bob's address is refused without a word about Bob.
    taken = api.post(
        "/v1/me/email-change", headers=as_alice, json={"email": bob, "current_password": PASSWORD}
    )
    assert taken.status_code == 202
    time.sleep(1)
    assert api.get("/v1/me", headers=as_alice).json()["pending_email"] is None

    # Customers are not staff; staff of one tenant never reach another's customers.
    assert api.get(f"/v1/staff/tenants/{TENANT}/accounts", headers=as_alice).status_code == 401
    staff = staff_headers(system, TENANT)
    other_staff = staff_headers(system, OTHER_TENANT)
    carol_id = api.get("/v1/me", headers=as_carol).json()["account_id"]
    assert api.get(f"/v1/staff/tenants/{TENANT}/accounts/{carol_id}", headers=staff).status_code == 404
    assert api.get(f"/v1/staff/tenants/{OTHER_TENANT}/accounts/{carol_id}", headers=staff).status_code == 403
    assert (
        api.post(f"/v1/staff/tenants/{TENANT}/accounts/{carol_id}/redaction", headers=staff).status_code
        == 404
    )
    assert (
        api.post(
            f"/v1/staff/tenants/{OTHER_TENANT}/accounts/{alice_id}/archive", headers=other_staff
        ).status_code
        == 404
    )
    listing = api.get(f"/v1/staff/tenants/{TENANT}/accounts", headers=staff, params={"q": "carol"}).json()
    assert listing["total"] == 0
    assert api.get("/v1/me", headers=as_carol).status_code == 200


def _b64(claims: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")


def test_rate_limits_per_address_and_per_client_with_retry_after(system, api):
    email = new_email("flood")
    for i in range(5):  # the default: 5 claims per address and hour, from any clients
        response = api.post(
            f"/v1/tenants/{TENANT}/accounts",
            json={"email": email, "name": "F"},
            headers=client_headers(f"192.0.2.{i}"),
        )
        assert response.status_code == 202
    limited = api.post(f"/v1/tenants/{TENANT}/accounts", json={"email": email, "name": "F"})
    assert limited.status_code == 429 and limited.headers["content-type"] == "application/problem+json"
    assert 60 < int(limited.headers["retry-after"]) <= 3600

    noisy = client_headers("192.0.2.200")  # 3 magic links a minute per client here
    answers = [
        api.post(f"/v1/tenants/{TENANT}/magic-links", json={"email": new_email()}, headers=noisy).status_code
        for _ in range(4)
    ]
    assert answers == [202, 202, 202, 429]
    assert api.post(f"/v1/tenants/{TENANT}/magic-links", json={"email": new_email()}).status_code == 202


def test_expired_sessions_are_refused(system, api):
    """A session past its `exp` is refused even though its signature is right (the signing key
    is the System's, as bookings would hold its public half)."""
    from backbone.credentials import SessionSigner, load_or_create_signing_key

    key = load_or_create_signing_key(system.root / "accounts" / "session-signing-key.pem")
    email = new_email("exp")
    verified_customer(system, None, TENANT, email, PASSWORD)
    account_id = api.get("/v1/me", headers=verified_customer_headers(api, email)).json()["account_id"]
    old, _ = SessionSigner(key, lifetime=timedelta(minutes=1)).issue(
        uuid.UUID(account_id), TENANT, now=datetime.now(UTC) - timedelta(minutes=2)
    )
    assert api.get("/v1/me", headers={"Authorization": f"Bearer {old}"}).status_code == 401


def verified_customer_headers(api, email):
    response = api.post(f"/v1/tenants/{TENANT}/sessions", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}
