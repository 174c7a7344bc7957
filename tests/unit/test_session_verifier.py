"""Session tokens: what the verifier accepts, and what its memory of checked tokens never lets
through (an altered token, an expired one, another key's)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from backbone.credentials import InvalidSession, Session, SessionSigner, SessionVerifier

KEY = Ed25519PrivateKey.generate()


def who(session: Session) -> tuple[object, ...]:
    return session.account_id, session.tenant_id, session.session_id


def test_a_token_checked_once_answers_the_same_session_again() -> None:
    token, session = SessionSigner(KEY).issue(uuid4(), "tours")
    verifier = SessionVerifier(KEY.public_key())
    first = verifier.verify(token)
    assert who(first) == who(session)
    assert verifier.verify(token) is first  # remembered: not decoded again


def test_a_remembered_token_still_expires() -> None:
    now = [datetime.now(UTC)]
    token, session = SessionSigner(KEY, lifetime=timedelta(hours=1)).issue(uuid4(), "tours", now=now[0])
    verifier = SessionVerifier(KEY.public_key(), clock=lambda: now[0])
    verifier.verify(token)  # remembered now
    now[0] = session.expires_at - timedelta(seconds=1)
    assert who(verifier.verify(token)) == who(session)
    now[0] = session.expires_at
    with pytest.raises(InvalidSession, match="expired"):
        verifier.verify(token)
    assert token not in verifier._checked
    with pytest.raises(InvalidSession, match="expired"):  # checked afresh: expired all the same
        verifier.verify(token)


def test_an_altered_copy_of_a_remembered_token_is_refused() -> None:
    token, _ = SessionSigner(KEY).issue(uuid4(), "tours")
    verifier = SessionVerifier(KEY.public_key())
    verifier.verify(token)
    head, _payload, signature = token.split(".")
    other, _ = SessionSigner(KEY).issue(uuid4(), "other-tenant")
    forged = ".".join([head, other.split(".")[1], signature])
    with pytest.raises(InvalidSession):
        verifier.verify(forged)
    with pytest.raises(InvalidSession):
        verifier.verify(token + "x")


def test_a_token_of_another_key_is_refused_even_after_a_good_one() -> None:
    verifier = SessionVerifier(KEY.public_key())
    good, _ = SessionSigner(KEY).issue(uuid4(), "tours")
    verifier.verify(good)
    bad, _ = SessionSigner(Ed25519PrivateKey.generate()).issue(uuid4(), "tours")
    with pytest.raises(InvalidSession):
        verifier.verify(bad)


def test_the_memory_is_bounded() -> None:
    verifier = SessionVerifier(KEY.public_key(), remember=3)
    tokens = [SessionSigner(KEY).issue(uuid4(), "tours")[0] for _ in range(5)]
    for token in tokens:
        verifier.verify(token)
    assert len(verifier._checked) == 3
    assert list(verifier._checked) == tokens[2:]
