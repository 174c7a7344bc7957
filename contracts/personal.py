"""Personal data on the bus: sealed per data subject, erasable by destroying the subject's key.

Every personal value in a message (email, name, phone, address) is a `Sealed` value: AES-256-GCM
ciphertext under the key of the person it is about (the *subject*), with the subject id as
associated data. The owner of a subject publishes its key on its compacted
`<service>.subject-keys` topic (Kafka key = subject id) before any message sealed with it;
when the subject is erased, a `SubjectKey` with `key: null` replaces it there, and every
service drops its copy. The ciphertext stays in the logs; nobody can open it any more.

Ciphertext format: base64url (no padding) of nonce (12 bytes) || ciphertext || tag (16 bytes).
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from pydantic import Field, StringConstraints

from contracts.envelope import UtcDatetime, Value


class Sealed(Value):
    subject_id: UUID = Field(description="Whom the value is about: whose key opens it.")
    ciphertext: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]*$", max_length=8192)]


class SubjectKey(Value):
    """A record of a `<service>.subject-keys` topic: a subject's key, or its erasure.

    On the bus the key is never in the clear: `sealed_keys` holds it sealed for each consuming
    service's bus key (libsodium sealed box, by key id; `backbone.signing`) and `key` is null.
    A record with neither is an erasure. (Inside a service's vault, `key` is the plain key.)
    """

    subject_id: UUID
    owner: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    key: Annotated[str, StringConstraints(min_length=40, max_length=64)] | None = Field(
        default=None, description="base64 of the 32-byte AES key: never on the bus."
    )
    sealed_keys: dict[Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")], str] = Field(
        default_factory=dict,
        description="The key sealed for each consumer's bus key (by key id); empty once erased.",
        max_length=64,
    )
    erased_at: UtcDatetime | None = None

    @property
    def erased(self) -> bool:
        return self.key is None and not self.sealed_keys


def subject_keys_topic(service: str) -> str:
    return f"{service}.subject-keys"


SUBJECT_KEY_CONSUMERS: dict[str, tuple[str, ...]] = {
    "accounts": ("bookings", "notifier"),
    "bookings": ("accounts", "notifier"),
}
"""Owner -> the services that consume its keys topic: they hold copies of its subjects' keys,
and its erasures reach those copies (nobody consumes the notifier's). The services' bootstraps
subscribe accordingly (tests/unit/test_subject_key_consumers.py)."""
