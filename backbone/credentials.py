"""Secrets that cross service boundaries: customer sessions and links sealed for the notifier.

* A customer session is an EdDSA-signed JWT issued by accounts; any service holding the public
  key checks it without calling accounts.
* A link whose holder can act on an account (verify it, log in) travels to the notifier on the
  bus sealed with the notifier's public key (libsodium sealed box): other readers of the topic,
  audit tools and the other services' stores only ever see ciphertext.
* Tokens are 256 random bits from the OS CSPRNG, stored only as their SHA-256 (the tokens are
  long enough that a fast hash is sound, OWASP ASVS 6.5.2).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.public import PrivateKey, PublicKey, SealedBox

ISSUER = "booking-accounts/accounts"
AUDIENCE = "booking-accounts"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


# ----------------------------------------------------------------------------- staff keys

STAFF_KEY_PREFIX = "staff_"


def staff_api_key(staff_id: UUID, secret: str) -> str:
    """A staff member's API key: it names its staff member, so that a service looks up one
    hash instead of comparing against every key of the tenant."""
    return f"{STAFF_KEY_PREFIX}{staff_id.hex}.{secret}"


def parse_staff_api_key(api_key: str) -> tuple[UUID, str] | None:
    """(staff id, hash of the secret) of a well-formed key; None otherwise."""
    if not api_key.startswith(STAFF_KEY_PREFIX):
        return None
    reference, _, secret = api_key.removeprefix(STAFF_KEY_PREFIX).partition(".")
    try:
        staff_id = UUID(hex=reference)
    except ValueError:
        return None
    return (staff_id, token_hash(secret)) if secret else None


# ------------------------------------------------------------------------------- sessions


@dataclass(frozen=True)
class Session:
    account_id: UUID
    tenant_id: str
    session_id: str
    issued_at: datetime
    expires_at: datetime


class InvalidSession(Exception):
    pass


class SessionSigner:
    def __init__(self, private_key: Ed25519PrivateKey, lifetime: timedelta = timedelta(hours=12)):
        self._key = private_key
        self.lifetime = lifetime

    def issue(self, account_id: UUID, tenant_id: str, now: datetime | None = None) -> tuple[str, Session]:
        now = now or datetime.now(UTC)
        session = Session(account_id, tenant_id, uuid4().hex, now, now + self.lifetime)
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": str(account_id),
            "tid": tenant_id,
            "sid": session.session_id,
            # To the microsecond (JWT allows a fractional NumericDate): a session issued right
            # after a revocation (`SessionsRevoked.revoked_before`) must compare as later.
            "iat": now.timestamp(),
            "exp": int(session.expires_at.timestamp()),
        }
        return jwt.encode(claims, self._key, algorithm="EdDSA"), session


class SessionVerifier:
    def __init__(self, public_key: Ed25519PublicKey):
        self._key = public_key

    def verify(self, token: str) -> Session:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=["EdDSA"],  # never trust the token's own "alg"
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "aud", "iss"]},
            )
            return Session(
                account_id=UUID(claims["sub"]),
                tenant_id=str(claims["tid"]),
                session_id=str(claims.get("sid", "")),
                issued_at=datetime.fromtimestamp(claims["iat"], UTC),
                expires_at=datetime.fromtimestamp(claims["exp"], UTC),
            )
        except (jwt.PyJWTError, KeyError, ValueError) as error:
            raise InvalidSession(str(error)) from None


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The accounts service's signing key: read from `path`, created there on first start."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key")
        return key
    key = Ed25519PrivateKey.generate()
    write_private(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    public_path(path).write_bytes(public_pem(key))
    return key


def write_private(path: Path, data: bytes) -> None:
    """Write a secret readable by its owner only from the first byte: created 0600 (never
    written first and chmodded after, when another user could open it in between), under a
    temporary name, then renamed into place (a crash leaves the old file or the new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def public_path(private_path: Path) -> Path:
    return private_path.with_name(private_path.stem + ".pub.pem")


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_verify_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key


# --------------------------------------------------------------------- sealed for notifier


def seal(recipient_public_key: bytes, secret: str) -> str:
    sealed = SealedBox(PublicKey(recipient_public_key)).encrypt(secret.encode())
    return base64.urlsafe_b64encode(sealed).decode()


def unseal(private_key: bytes, sealed: str) -> str:
    return SealedBox(PrivateKey(private_key)).decrypt(base64.urlsafe_b64decode(sealed)).decode()


def load_or_create_sealing_keys(path: Path) -> tuple[bytes, bytes]:
    """The notifier's key pair (private, public), raw 32 bytes each, kept at `path`."""
    if path.exists():
        private = PrivateKey(base64.b64decode(path.read_text().strip()))
    else:
        private = PrivateKey.generate()
        write_private(path, base64.b64encode(bytes(private)))
        path.with_suffix(".pub").write_text(base64.b64encode(bytes(private.public_key)).decode())
    return bytes(private), bytes(private.public_key)
