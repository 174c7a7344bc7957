"""Who sent a message on the bus: Ed25519 signatures over the body and the headers that matter.

Kafka tells a consumer nothing about who produced a record (ACLs decide who *may* write a
topic, but a consumer cannot see the principal). So every service signs what it publishes with
its own bus key, and every consumer checks, before it believes anything of a record (its
headers included: the `source-position` that deduplication trusts), that:

1. the record is signed (`signature` and `signature-key-id` headers);
2. the key id is one this consumer trusts (its keyring: the `*.pub` files of a directory,
   several per service, so that a service's key can be rotated without downtime);
3. the signature verifies over the body and the signed headers (`SIGNED_HEADERS`, absent ones
   included as absent: a header cannot be added or removed either);
4. the signer owns the topic (`accounts.events` only from accounts, ...) and the `source`
   header names the signer.

A record that fails is refused with a final reason code (`REFUSALS`): dead-lettered and
counted (`bus_refused_total`), never applied. The one exception to 4. is an operator's retry
of a dead letter (`dlq-retry-of` header, signed): signed by the consuming service's own key
(the operator tool runs with it), it is accepted on any topic that service consumes.

What is signed (the same bytes for every producer, including other teams' command publishers,
see docs/publishing-booking-commands.md): the UTF-8 of the compact JSON array
`["booking-accounts/bus/v1", [[name, value-or-null] for name in SIGNED_HEADERS], sha256-hex(body)]`.

The same key pair also receives subject keys: a service's Ed25519 key converts to an X25519
key (libsodium's `crypto_sign_ed25519_*_to_curve25519`), and owners seal each subject key for
every consumer's public key (`seal_for` / `open_sealed`, libsodium sealed boxes).

Key files: the private key is the base64 of its 32-byte seed (`BUS_KEY_FILE`), a public key
the base64 of its 32 bytes, in a file `<service>.<anything>.pub` of the trusted-keys directory
(`BUS_TRUSTED_KEYS_DIR`). `python -m deploy.keys DIR` creates them; a missing file stops the
service at start.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.public import PublicKey, SealedBox
from nacl.signing import SigningKey, VerifyKey

from backbone.bus import H_ID, H_SOURCE, H_SOURCE_POSITION, H_TENANT, H_TYPE, H_VERSION, Record
from contracts.topics import PUBLISHERS, owners

H_SIGNATURE = "signature"
H_KEY_ID = "signature-key-id"
H_RETRY_OF = "dlq-retry-of"  # = backbone.deadletters.H_RETRY_OF (not imported: no cycle)

DOMAIN = "booking-accounts/bus/v1"
SIGNED_HEADERS = (H_TYPE, H_VERSION, H_ID, H_SOURCE, H_SOURCE_POSITION, H_TENANT, H_RETRY_OF)
"""The headers a signature covers. Consumers believe no other header."""

# Final reasons a record is refused for (dead-letter reason codes, metric labels).
UNSIGNED = "unsigned"
UNKNOWN_KEY = "unknown_signing_key"
BAD_SIGNATURE = "bad_signature"
NOT_FROM_OWNER = "not_from_owner"
REFUSALS = (UNSIGNED, UNKNOWN_KEY, BAD_SIGNATURE, NOT_FROM_OWNER)


class KeyFileMissing(Exception):
    """A bus key file or directory a service needs is not there: it must not start."""


def key_id(public_key: bytes) -> str:
    """A public key's id: derived from the key, so an id can never name another key."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def signing_input(body: bytes, headers: Mapping[str, str | None]) -> bytes:
    covered = [[name, headers.get(name)] for name in SIGNED_HEADERS]
    return json.dumps([DOMAIN, covered, hashlib.sha256(body).hexdigest()], separators=(",", ":")).encode()


# ----------------------------------------------------------------------------- signing


class Signer:
    """One service's (or command publisher's) private bus key."""

    def __init__(self, identity: str, key: SigningKey):
        self.identity = identity
        self._key = key
        self.public_key = bytes(key.verify_key)
        self.key_id = key_id(self.public_key)

    @classmethod
    def generate(cls, identity: str) -> Signer:
        return cls(identity, SigningKey.generate())

    @classmethod
    def load(cls, identity: str, path: Path, setting: str = "BUS_KEY_FILE") -> Signer:
        if not path.is_file():
            raise KeyFileMissing(
                f"{setting}: the bus signing key of {identity} is missing ({path}). Create the "
                "deployment's keys with `python -m deploy.keys DIR` and point the setting at "
                f"DIR/bus/{identity}.key (docs/security.md, 'The bus')."
            )
        return cls(identity, SigningKey(base64.b64decode(path.read_text().strip())))

    def signature_headers(self, body: bytes, headers: Mapping[str, str]) -> dict[str, str]:
        signature = self._key.sign(signing_input(body, headers)).signature
        return {H_SIGNATURE: base64.b64encode(signature).decode(), H_KEY_ID: self.key_id}

    def sign(self, body: bytes, headers: Mapping[str, str]) -> dict[str, str]:
        """The headers with this key's signature over them and the body."""
        unsigned = {k: v for k, v in headers.items() if k not in (H_SIGNATURE, H_KEY_ID)}
        return {**unsigned, **self.signature_headers(body, unsigned)}

    def sign_record(self, record: Record) -> Record:
        return Record(
            record.topic,
            record.value,
            record.key,
            self.sign(record.value, record.headers),
            record.correlation_id,
        )

    def open_sealed(self, sealed: str) -> bytes:
        """Open what an owner sealed for this key (`seal_for`). CryptoError if not for us."""
        private = self._key.to_curve25519_private_key()
        return SealedBox(private).decrypt(base64.b64decode(sealed))

    def save(self, path: Path) -> None:
        """Write the private key (readable by its owner only, from the first byte)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(base64.b64encode(bytes(self._key)).decode())


def create_key(folder: Path, identity: str) -> Signer:
    """A service's bus key in a keys folder, created if missing: `<folder>/<identity>.key`, and
    its public key trusted by every service: `<folder>/trusted/<identity>.<key id>.pub`."""
    path = folder / f"{identity}.key"
    if path.exists():
        signer = Signer.load(identity, path)
    else:
        signer = Signer.generate(identity)
        signer.save(path)
    trust(folder / "trusted", identity, signer.public_key)
    return signer


def key_settings(folder: Path, service: str) -> dict[str, Path]:
    """A service's bus key settings (BUS_KEY_FILE, BUS_TRUSTED_KEYS_DIR) over a keys folder,
    its key created if missing (documents built without infrastructure, tests)."""
    create_key(folder, service)
    return {"bus_key_file": folder / f"{service}.key", "bus_trusted_keys_dir": folder / "trusted"}


def trust(directory: Path, owner: str, public_key: bytes) -> Path:
    """Add a public key to a trusted-keys directory (rotation: add the new one first)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{owner}.{key_id(public_key)}.pub"
    path.write_text(base64.b64encode(public_key).decode())
    return path


# ---------------------------------------------------------------------------- trusting


@dataclass(frozen=True)
class TrustedKey:
    owner: str  # the service (or publisher) it belongs to
    key_id: str
    public_key: bytes

    def verifies(self, body: bytes, headers: Mapping[str, str | None], signature: bytes) -> bool:
        try:
            self._verify_key.verify(signing_input(body, headers), signature)
            return True
        except (BadSignatureError, ValueError):
            return False

    def seal_for(self, secret: bytes) -> str:
        return base64.b64encode(SealedBox(self._box_key).encrypt(secret)).decode()

    @functools.cached_property
    def _box_key(self) -> PublicKey:
        # Converted once: it was a tenth of the relay's time, once per subject key it sealed.
        return VerifyKey(self.public_key).to_curve25519_public_key()

    @functools.cached_property
    def _verify_key(self) -> VerifyKey:
        return VerifyKey(self.public_key)


class Keyring:
    """The public bus keys a service trusts, by key id (several per service: rotation)."""

    def __init__(self, keys: Iterable[TrustedKey] = ()):
        self.keys = {key.key_id: key for key in keys}

    @classmethod
    def load(cls, directory: Path, setting: str = "BUS_TRUSTED_KEYS_DIR") -> Keyring:
        if not directory.is_dir():
            raise KeyFileMissing(
                f"{setting}: the directory of trusted bus keys is missing ({directory}). Create "
                "the deployment's keys with `python -m deploy.keys DIR` and point the setting at "
                "DIR/bus/trusted (docs/security.md, 'The bus')."
            )
        keys = []
        for path in sorted(directory.glob("*.pub")):
            public = base64.b64decode(path.read_text().strip())
            keys.append(TrustedKey(path.name.split(".", 1)[0], key_id(public), public))
        return cls(keys)

    def get(self, kid: str) -> TrustedKey | None:
        return self.keys.get(kid)

    def of(self, owner: str) -> list[TrustedKey]:
        return [key for key in self.keys.values() if key.owner == owner]

    def others(self, me: str) -> list[TrustedKey]:
        """Every key of every other service: whom this service seals its subject keys for."""
        return [key for key in self.keys.values() if key.owner != me]


@dataclass(frozen=True)
class Refusal:
    reason: str  # one of REFUSALS
    detail: str
    signer: str | None = None


def headers_of(record: Any) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in record.headers or ():
        try:
            headers[name] = value.decode() if isinstance(value, bytes) else str(value)
        except UnicodeDecodeError:
            headers[name] = ""
    return headers


class Verifier:
    """Checks that a consumed record comes from whoever owns its topic (see the docstring).

    `owners` maps a topic (its real name) to the service that alone may write it. `lookup`
    finds keys beyond the keyring (the command publishers registered with bookings); `me` is
    the consuming service (its own key signs operators' retries of its dead letters).
    """

    def __init__(
        self,
        keyring: Keyring,
        owners: Mapping[str, str],
        me: str,
        lookup: Callable[[str], TrustedKey | None] | None = None,
        accept_unsigned_commands: bool = False,
    ):
        self.keyring = keyring
        self.owners = dict(owners)
        self.me = me
        self.lookup = lookup
        self.accept_unsigned_commands = accept_unsigned_commands  # local development only

    def refusal(self, record: Any) -> Refusal | None:
        """None if the record is authentic and from its topic's owner; why not otherwise."""
        headers = headers_of(record)
        signature, kid = headers.get(H_SIGNATURE), headers.get(H_KEY_ID)
        if not signature or not kid:
            if self.accept_unsigned_commands and self.carries_commands(record.topic):
                return None
            return Refusal(UNSIGNED, "the record carries no signature (signature, signature-key-id)")
        key = self.keyring.get(kid) or (self.lookup(kid) if self.lookup else None)
        if key is None:
            return Refusal(UNKNOWN_KEY, f"no trusted key has the id {kid!r}")
        try:
            raw = base64.b64decode(signature, validate=True)
        except ValueError:
            raw = b""
        if not key.verifies(record.value or b"", headers, raw):
            return Refusal(BAD_SIGNATURE, f"the signature does not verify with {key.owner}'s key {kid}")
        if key.owner == self.me and headers.get(H_RETRY_OF):
            return None  # an operator's retry of one of our dead letters, signed with our key
        owner = self.owners.get(record.topic)
        if owner == PUBLISHERS:  # a commands topic: any registered publisher, never a service
            if self.keyring.get(kid) is None:
                return None  # what it may do is checked against its grants (bookings)
            return Refusal(NOT_FROM_OWNER, f"{key.owner} is a service, not a command publisher", key.owner)
        if key.owner != owner:
            return Refusal(NOT_FROM_OWNER, f"{key.owner} signed a record of {record.topic}", key.owner)
        source = headers.get(H_SOURCE)
        if source is not None and source != key.owner:
            return Refusal(NOT_FROM_OWNER, f"{key.owner} signed a record naming {source!r} as its source")
        return None

    def operator_retry(self, record: Any) -> bool:
        """An operator's retry of one of our dead letters (signed with our own key)? Call
        after `refusal` said None: such a command needs no publisher's grants."""
        headers = headers_of(record)
        key = self.keyring.get(headers.get(H_KEY_ID) or "")
        return bool(headers.get(H_RETRY_OF)) and key is not None and key.owner == self.me

    def carries_commands(self, topic: str) -> bool:
        return self.owners.get(topic) == PUBLISHERS

    def signer_of(self, record: Any) -> TrustedKey | None:
        kid = headers_of(record).get(H_KEY_ID) or ""
        return self.keyring.get(kid) or (self.lookup(kid) if self.lookup else None)


@dataclass(frozen=True)
class BusKeys:
    """A service's bus identity: its key, the keys it trusts, and its check of what it reads."""

    signer: Signer
    keyring: Keyring
    verifier: Verifier

    @classmethod
    def load(
        cls,
        service: str,
        key_file: Path | None,
        trusted_dir: Path | None,
        topic: Callable[[str], str] = lambda name: name,
        lookup: Callable[[str], TrustedKey | None] | None = None,
        accept_unsigned_commands: bool = False,
    ) -> BusKeys:
        """Read the keys from their files; KeyFileMissing (the service must not start) if a
        file is not there. `topic` gives the real name of a contract topic (its namespace)."""
        if key_file is None or trusted_dir is None:
            raise KeyFileMissing(
                f"{service}: BUS_KEY_FILE and BUS_TRUSTED_KEYS_DIR must be set: create the "
                "deployment's keys with `python -m deploy.keys DIR` and set them to "
                f"DIR/bus/{service}.key and DIR/bus/trusted (docs/security.md, 'The bus')."
            )
        signer = Signer.load(service, key_file)
        keyring = Keyring.load(trusted_dir)
        if keyring.get(signer.key_id) is None:
            raise KeyFileMissing(
                f"{service}: its own public bus key ({signer.key_id}) is not among the trusted keys "
                f"in {trusted_dir}: the other services could not believe it"
            )
        table = {topic(name): owner for name, owner in owners().items()}
        verifier = Verifier(keyring, table, service, lookup, accept_unsigned_commands)
        return cls(signer, keyring, verifier)


def open_subject_key(signer: Signer, sealed_keys: Mapping[str, str]) -> bytes | None:
    """The subject key sealed for this service (any of its key ids): None if none is for us."""
    sealed = sealed_keys.get(signer.key_id)
    if sealed is None:
        return None
    try:
        return signer.open_sealed(sealed)
    except (CryptoError, ValueError):
        return None
