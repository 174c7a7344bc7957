"""Backbone support for erasure: the vault's service secrets, and sessions precise enough to
compare with a revocation instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from backbone.credentials import SessionSigner, SessionVerifier
from backbone.personal import Vault


def test_a_service_secret_is_created_once_and_kept(tmp_path):
    url = f"sqlite+pysqlite:///{tmp_path / 'keys.sqlite3'}"
    first = Vault(url, "accounts")
    secret = first.secret("email-index")
    assert len(secret) == 32 and first.secret("email-index") == secret
    assert first.secret("another") != secret
    first.close()
    again = Vault(url, "accounts")
    assert again.secret("email-index") == secret
    assert again.unpublished() == []  # secrets never go to the keys topic
    again.close()


def test_a_session_knows_its_issue_time_to_the_microsecond():
    key = Ed25519PrivateKey.generate()
    now = datetime.now(UTC).replace(microsecond=123457)
    token, _ = SessionSigner(key).issue(uuid4(), "t", now=now - timedelta(seconds=1))
    assert SessionVerifier(key.public_key()).verify(token).issued_at == now - timedelta(seconds=1)
