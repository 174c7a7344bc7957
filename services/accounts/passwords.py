"""Passwords: a real strength rule (zxcvbn), argon2id hashes, and logins that take as long for
an unknown address as for a known one."""

from __future__ import annotations

import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from zxcvbn import zxcvbn

from backbone.credentials import new_token
from backbone.domain import DomainError

MIN_SCORE = 3  # zxcvbn: 3 = "safely unguessable: moderate protection from offline attacks"
MAX_LENGTH = 72  # zxcvbn refuses longer ones (its matching is quadratic); argon2 does not care
HASHES_AT_ONCE = 2
"""argon2id hashes (and verifications) a process computes at once; the others wait their turn.
Each holds 64 MiB (RFC 9106 low-memory) for as long as it runs and keeps two cores busy with
its four lanes, so more at once finish no sooner in all: under a burst of logins a soak saw
accounts' RSS at its base plus six of them (one per worker thread), 154 -> 539 MB. Two at
once bound it at the base plus 128 MiB (see "Memory over a soak" in docs/performance.md)."""


class WeakPassword(DomainError):
    code = "weak_password"


class Passwords:
    def __init__(self, hasher: PasswordHasher | None = None):
        self.hasher = hasher or PasswordHasher()  # argon2id, RFC 9106 low-memory parameters
        self._turns = threading.BoundedSemaphore(HASHES_AT_ONCE)
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
        with self._turns:
            return self.hasher.hash(password)

    def matches(self, stored_hash: str | None, password: str) -> bool:
        """Constant work: an account without a (readable) hash is checked against the decoy."""
        try:
            with self._turns:
                verified = self.hasher.verify(stored_hash or self._decoy, password)
            return verified and stored_hash is not None
        except (VerificationError, InvalidHashError):
            return False
