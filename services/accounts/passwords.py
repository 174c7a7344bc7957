"""Passwords: a real strength rule (zxcvbn), argon2id hashes, and logins that take as long for
an unknown address as for a known one."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from zxcvbn import zxcvbn

from backbone.credentials import new_token
from backbone.domain import DomainError

MIN_SCORE = 3  # zxcvbn: 3 = "safely unguessable: moderate protection from offline attacks"
MAX_LENGTH = 72  # zxcvbn refuses longer ones (its matching is quadratic); argon2 does not care


class WeakPassword(DomainError):
    code = "weak_password"


class Passwords:
    def __init__(self, hasher: PasswordHasher | None = None):
        self.hasher = hasher or PasswordHasher()  # argon2id, RFC 9106 low-memory parameters
        # Verified against when the address is unknown, so that a failed login costs the same
        # whether or not the address has an account (no enumeration by timing).
        self._decoy = self.hasher.hash(new_token())

    def check_strength(self, password: str, *personal: str) -> None:
        """Refuse guessable passwords, including ones made of the customer's own details."""
        if len(password) > MAX_LENGTH:
            raise WeakPassword(f"A password may have at most {MAX_LENGTH} characters.")
        verdict = zxcvbn(password, user_inputs=[p for p in personal if p])
        if verdict["score"] < MIN_SCORE:
            hint = verdict["feedback"].get("warning") or "Add more words or characters."
            raise WeakPassword(f"This password is too easy to guess. {hint}".strip())

    def hash(self, password: str) -> str:
        return self.hasher.hash(password)

    def matches(self, stored_hash: str | None, password: str) -> bool:
        """Constant work: an account without a (readable) hash is checked against the decoy."""
        try:
            return self.hasher.verify(stored_hash or self._decoy, password) and stored_hash is not None
        except (VerificationError, InvalidHashError):
            return False
