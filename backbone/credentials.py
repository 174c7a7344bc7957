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
import threading
from collections import OrderedDict
from collections.abc import Callable
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
    """Checks session tokens. A token it has checked is remembered (a bounded cache, the least
    recently used forgotten first) until it expires: a customer's every page view presents the
    same token, and checking its signature and claims again was a tenth of a read's CPU time.

    Only the exact token text is remembered, and only once its signature and claims checked
    out, so an altered token is never answered from the cache; its expiry is checked on every
    use. Revocation is not the token's business: routes check the account's
    `sessions_revoked_before`, on every request, as before."""

    def __init__(
        self,
        public_key: Ed25519PublicKey,
        *,
        remember: int = 10_000,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self._key = public_key
        self._remember = remember
        self._clock = clock
        self._checked: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, token: str) -> Session:
        with self._lock:
            session = self._checked.get(token)
            if session is not None:
                self._checked.move_to_end(token)
        if session is None:
            session = self._check(token)
            if self._remember > 0:
                with self._lock:
                    self._checked[token] = session
                    if len(self._checked) > self._remember:
                        self._checked.popitem(last=False)
        if self._clock() >= session.expires_at:  # as PyJWT would: expired from `exp` on
            with self._lock:
                self._checked.pop(token, None)
            raise InvalidSession("Signature has expired")
        return session

    def _check(self, token: str) -> Session:
        """The token's signature and claims; its expiry is `verify`'s (one clock for both paths)."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=["EdDSA"],  # never trust the token's own "alg"
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "aud", "iss"], "verify_exp": False},
            )
            return Session(
                account_id=UUID(claims["sub"]),
                tenant_id=str(claims["tid"]),
                session_id=str(claims.get("sid", "")),
                issued_at=datetime.fromtimestamp(claims["iat"], UTC),
                expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
            )
        except (jwt.PyJWTError, KeyError, ValueError, TypeError, OverflowError, OSError) as error:
            raise InvalidSession(str(error)) from None


class MissingKey(SystemExit):
    """A key file a service needs is not there. The service stops at start with this message:
    keys are created once, by `deploy/local` (or the deployment's keys job), never by a
    service (a replica that made up its own key would sign or seal what no one else accepts)."""

    def __init__(self, what: str, path: Path, setting: str):
        super().__init__(
            f"{what} not found at {path}. Create the keys once with `python -m deploy.keys <folder>` "
            f"(deploy/local does it; in Kubernetes the keys Job), then point {setting} at it."
        )


def _require(path: Path, what: str, setting: str) -> Path:
    if not path.is_file():
        raise MissingKey(what, path, setting)
    return path


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The accounts service's signing key; `MissingKey` if the file is not there."""
    key = serialization.load_pem_private_key(
        _require(path, "The session signing key", "SESSION_SIGNING_KEY_FILE").read_bytes(), password=None
    )
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def load_sealing_keys(path: Path) -> tuple[bytes, bytes]:
    """The notifier's key pair (private, public); `MissingKey` if the file is not there."""
    private = PrivateKey(
        base64.b64decode(_require(path, "The sealing key", "SEALING_KEY_FILE").read_text().strip())
    )
    return bytes(private), bytes(private.public_key)


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The accounts service's signing key: read from `path`, created there if missing (for
    `deploy/keys.py`, `deploy/local` and tests; services use `load_signing_key`)."""
    if path.exists():
        return load_signing_key(path)
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
    key = serialization.load_pem_public_key(
        _require(path, "The session verification key", "SESSION_PUBLIC_KEY_FILE").read_bytes()
    )
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
