"""Personal data that can be erased from immutable logs: crypto-shredding, per data subject.

Event logs are never rewritten, so personal data (email, name, phone, address) is never stored
or published in the clear. Each *data subject* (a customer account, or the customer of a booking
made without an account) has its own AES-256-GCM key, and every personal value about it is
sealed with that key wherever it is written: in every service's event store (through a
transcoding, so domain code handles plain `Personal` values), and in every message on the bus
(as `contracts.personal.Sealed`). The same subject key is used everywhere; it travels to the
services that need it on the owner's compacted `<service>.subject-keys` topic.

Erasing a subject is deleting its key, everywhere: in the owner's vault, on the keys topic (an
"erased" record replaces the key; compaction then removes the key from Kafka), and in every
service that held a copy. What remains in the logs and topics is ciphertext nobody can open:
replays show the value as erased.

The vault is not event-sourced on purpose: it is the one place where deletion must be real. It
lives in its own SQLite file (rollback journal + `secure_delete`, so a deleted key is
overwritten in the file) or in the service's PostgreSQL database (`subject_keys` table).
"""

from __future__ import annotations

import base64
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import Transcoding

from backbone.sqltypes import UtcDateTime, server_engine
from contracts.personal import Sealed, SubjectKey

ERASED_TEXT = "[erased]"
CACHE_SIZE = 100_000  # keys kept in memory (32 bytes each); the rest are read from the vault


class UnknownSubject(Exception):
    """No key for this subject has arrived here yet: retry later (it is on its way)."""


@dataclass(frozen=True)
class Personal:
    """A piece of personal data about one subject. `value` is None once the subject is erased."""

    subject_id: UUID
    value: str | None

    @property
    def erased(self) -> bool:
        return self.value is None

    def __str__(self) -> str:
        return ERASED_TEXT if self.value is None else self.value


metadata = sa.MetaData()
subject_keys = sa.Table(
    "subject_keys",
    metadata,
    sa.Column("subject_id", sa.String(36), primary_key=True),
    sa.Column("owner", sa.String(64), nullable=False),  # the service that created the subject
    sa.Column("key", sa.LargeBinary, nullable=True),  # NULL once erased
    sa.Column("erased_at", UtcDateTime, nullable=True),
    sa.Column("published", sa.Boolean, nullable=False, default=False),  # on the keys topic
)
service_secrets = sa.Table(
    "service_secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.LargeBinary, nullable=False),
)


class Vault:
    """One service's subject keys: its own subjects' and copies of other services'."""

    def __init__(self, url: str, service: str):
        self.service = service
        self.engine = _engine(url)
        metadata.create_all(self.engine)
        self._cache: OrderedDict[UUID, bytes | None] = OrderedDict()  # most recent last
        self._lock = threading.Lock()

    # --------------------------------------------------------------------- keys

    def key_for(self, subject_id: UUID) -> bytes:
        """The key of a subject of this service, created on first use. Raises KeyError if
        the subject was erased (nothing new may be written about it)."""
        key = self._lookup(subject_id)
        if key is not None:
            return key
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(subject_keys).where(subject_keys.c.subject_id == str(subject_id))
            ).first()
            if row is not None:
                if row.key is None:
                    raise KeyError(f"subject {subject_id} was erased")
                return self._remember(subject_id, row.key)
            key = AESGCM.generate_key(bit_length=256)
            conn.execute(
                sa.insert(subject_keys).values(
                    subject_id=str(subject_id), owner=self.service, key=key, published=False
                )
            )
        return self._remember(subject_id, key)

    def create_keys(self, subject_ids: Iterable[UUID]) -> None:
        """Create, in one transaction, the keys of the subjects this vault has never seen (as
        `seal` would one by one): one disk sync for a batch of new subjects instead of one each.
        Known subjects (own, copies, erased) are left as they are."""
        unseen = {s for s in subject_ids if self._lookup(s) is None}
        if not unseen:
            return
        with self.engine.begin() as conn:
            known = {
                UUID(row)
                for row in conn.execute(
                    sa.select(subject_keys.c.subject_id).where(
                        subject_keys.c.subject_id.in_([str(s) for s in unseen])
                    )
                ).scalars()
            }
            created = {s: AESGCM.generate_key(bit_length=256) for s in unseen - known}
            if created:
                conn.execute(
                    sa.insert(subject_keys),
                    [
                        {"subject_id": str(s), "owner": self.service, "key": key, "published": False}
                        for s, key in created.items()
                    ],
                )
        for subject_id, key in created.items():
            self._remember(subject_id, key)

    def key(self, subject_id: UUID) -> bytes | None:
        """The key to open a subject's data: None if erased; UnknownSubject if not known yet."""
        with self._lock:
            if subject_id in self._cache:
                return self._cache[subject_id]
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(subject_keys.c.key, subject_keys.c.erased_at).where(
                    subject_keys.c.subject_id == str(subject_id)
                )
            ).first()
        if row is None:
            raise UnknownSubject(f"no key for subject {subject_id} yet")
        return self._remember(subject_id, row.key)

    def accept(self, record: SubjectKey) -> None:
        """Take a key (or an erasure) published by the subject's owner. Idempotent; an
        erasure is final: a late copy of the key never brings it back."""
        self.accept_all([record])

    def accept_all(self, records: Sequence[SubjectKey]) -> None:
        """`accept` for many records, in one transaction (a batch from a keys topic)."""
        with self.engine.begin() as conn:
            for record in records:
                row = conn.execute(
                    sa.select(subject_keys.c.owner, subject_keys.c.key, subject_keys.c.erased_at).where(
                        subject_keys.c.subject_id == str(record.subject_id)
                    )
                ).first()
                if row is not None and row.owner != record.owner:
                    # Only a subject's owner speaks for it. An erasure heard before any key
                    # names its owner only provisionally: the first key, from its real owner,
                    # replaces it (a service cannot erase another's subject ahead of its key).
                    if row.key is None and not record.erased and record.key is not None:
                        conn.execute(
                            sa.update(subject_keys)
                            .where(subject_keys.c.subject_id == str(record.subject_id))
                            .values(
                                owner=record.owner,
                                key=base64.b64decode(record.key),
                                erased_at=None,
                                published=True,
                            )
                        )
                    continue
                if record.erased:
                    self._erase_in(conn, record.subject_id, record.owner, published=True)
                elif record.key is None:
                    raise ValueError(f"the key of subject {record.subject_id} is sealed: open it first")
                elif row is None:
                    conn.execute(
                        sa.insert(subject_keys).values(
                            subject_id=str(record.subject_id),
                            owner=record.owner,
                            key=base64.b64decode(record.key),
                            published=True,
                        )
                    )
        with self._lock:
            for record in records:
                self._cache.pop(record.subject_id, None)

    def erase(self, subject_id: UUID) -> None:
        """Destroy a subject's key here. Idempotent."""
        with self.engine.begin() as conn:
            self._erase_in(conn, subject_id, self.service, published=False)
        with self._lock:
            self._cache[subject_id] = None
        if self.engine.dialect.name == "postgresql":
            # Reclaim the dead row now rather than at the next autovacuum.
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("VACUUM subject_keys"))

    def is_erased(self, subject_id: UUID) -> bool:
        try:
            return self.key(subject_id) is None
        except UnknownSubject:
            return False

    def secret(self, name: str) -> bytes:
        """A random 256-bit secret of this service, created on first use and kept here, never
        published. For keyed hashes over personal data (e.g. an id derived from an email
        address): whoever holds only the event store or a topic cannot recompute them, and the
        secret is backed up, restored and deleted together with the keys."""
        query = sa.select(service_secrets.c.value).where(service_secrets.c.name == name)
        try:
            with self.engine.begin() as conn:
                value = conn.execute(query).scalar()
                if value is None:
                    value = os.urandom(32)
                    conn.execute(sa.insert(service_secrets).values(name=name, value=value))
                return value
        except sa.exc.IntegrityError:  # another instance created it at the same moment
            with self.engine.connect() as conn:
                return conn.execute(query).scalar_one()

    # -------------------------------------------------------------- publication

    def unpublished(self, limit: int = 500) -> list[SubjectKey]:
        """This service's keys and erasures that are not on its keys topic yet."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(subject_keys)
                .where(subject_keys.c.owner == self.service, subject_keys.c.published.is_(False))
                .limit(limit)
            ).all()
        return [
            SubjectKey(
                subject_id=UUID(row.subject_id),
                owner=row.owner,
                key=base64.b64encode(row.key).decode() if row.key is not None else None,
                erased_at=row.erased_at,
            )
            for row in rows
        ]

    def mark_published(self, records: list[SubjectKey]) -> None:
        with self.engine.begin() as conn:
            for record in records:
                still_same = (
                    subject_keys.c.key.is_(None) if record.key is None else subject_keys.c.key.isnot(None)
                )
                conn.execute(
                    sa.update(subject_keys)
                    .where(subject_keys.c.subject_id == str(record.subject_id), still_same)
                    .values(published=True)
                )

    # ----------------------------------------------------------------- sealing

    def seal(self, subject_id: UUID, plaintext: str) -> Sealed:
        """Seal a value about a subject. A subject this vault has never seen becomes one of
        its own (keys of other services' subjects arrive before their data does)."""
        try:
            key = self.key(subject_id)
        except UnknownSubject:
            key = self.key_for(subject_id)
        if key is None:
            raise KeyError(f"subject {subject_id} was erased")
        return Sealed(subject_id=subject_id, ciphertext=encrypt(key, subject_id, plaintext))

    def open(self, sealed: Sealed | dict[str, Any] | None) -> Personal | None:
        """The plain value of sealed data: `Personal(..., None)` if its subject was erased."""
        if sealed is None:
            return None
        if isinstance(sealed, dict):
            sealed = Sealed.model_validate(sealed)
        if not sealed.ciphertext:  # published after the subject was erased
            return Personal(sealed.subject_id, None)
        key = self.key(sealed.subject_id)
        if key is None:
            return Personal(sealed.subject_id, None)
        return Personal(sealed.subject_id, decrypt(key, sealed.subject_id, sealed.ciphertext))

    def personal(self, subject_id: UUID, value: str | None) -> Personal | None:
        """A value to store about a subject of this service (its key is created if need be)."""
        if value is None:
            return None
        self.key_for(subject_id)
        return Personal(subject_id, value)

    def ping(self) -> None:
        """A trivial query: raises if the vault's database does not answer."""
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def close(self) -> None:
        self.engine.dispose()

    # ----------------------------------------------------------------- internals

    def _lookup(self, subject_id: UUID) -> bytes | None:
        with self._lock:
            return self._cache.get(subject_id)

    def _remember(self, subject_id: UUID, key: bytes | None) -> bytes | None:
        with self._lock:
            self._cache[subject_id] = key
            self._cache.move_to_end(subject_id)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return key

    def _erase_in(self, conn: Any, subject_id: UUID, owner: str, *, published: bool) -> None:
        now = datetime.now(UTC)
        row = conn.execute(
            sa.select(subject_keys.c.erased_at).where(subject_keys.c.subject_id == str(subject_id))
        ).first()
        if row is None:
            conn.execute(
                sa.insert(subject_keys).values(
                    subject_id=str(subject_id), owner=owner, key=None, erased_at=now, published=published
                )
            )
        elif row.erased_at is None:
            conn.execute(
                sa.update(subject_keys)
                .where(subject_keys.c.subject_id == str(subject_id))
                .values(key=None, erased_at=now, published=published)
            )


def encrypt(key: bytes, subject_id: UUID, plaintext: str) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), subject_id.bytes)
    return base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")


def decrypt(key: bytes, subject_id: UUID, ciphertext: str) -> str:
    raw = base64.urlsafe_b64decode(ciphertext + "=" * (-len(ciphertext) % 4))
    try:
        return AESGCM(key).decrypt(raw[:12], raw[12:], subject_id.bytes).decode()
    except InvalidTag:
        raise ValueError(f"sealed data of subject {subject_id} does not open with its key") from None


def subjects_in(value: Any) -> Iterable[UUID]:
    """The subjects of the personal values (not erased) anywhere inside a value."""
    if isinstance(value, Personal):
        if value.value is not None:
            yield value.subject_id
    elif isinstance(value, dict):
        for item in value.values():
            yield from subjects_in(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from subjects_in(item)


class PersonalAsSealed(Transcoding):
    """Stores a `Personal` value sealed with its subject's key; reads it back, or erased."""

    type = Personal
    name = "personal"

    def __init__(self, vault: Vault):
        self.vault = vault

    def encode(self, obj: Personal) -> dict[str, str]:
        if obj.value is None:
            return {"s": str(obj.subject_id), "c": ""}
        try:
            sealed = self.vault.seal(obj.subject_id, obj.value)
        except KeyError:
            # The subject was erased meanwhile: what arrives about them now is stored erased,
            # rather than failing the save (and stalling whoever is saving) forever.
            return {"s": str(obj.subject_id), "c": ""}
        return {"s": str(obj.subject_id), "c": sealed.ciphertext}

    def decode(self, data: dict[str, str]) -> Personal:
        subject_id = UUID(data["s"])
        if not data["c"]:
            return Personal(subject_id, None)
        opened = self.vault.open(Sealed(subject_id=subject_id, ciphertext=data["c"]))
        assert opened is not None
        return opened


def _engine(url: str) -> sa.Engine:
    if url.startswith("sqlite") and ":memory:" in url:
        from sqlalchemy.pool import StaticPool

        return sa.create_engine(url, connect_args={"check_same_thread": False}, poolclass=StaticPool)
    if url.startswith("sqlite"):
        Path(sa.engine.make_url(url).database or ".").parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _: Any) -> None:
            cursor = dbapi_conn.cursor()
            # No write-ahead log (it would keep deleted keys in a second file), and deleted
            # content overwritten with zeros in the database file itself.
            cursor.execute("PRAGMA journal_mode=DELETE")
            cursor.execute("PRAGMA secure_delete=ON")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.close()

        return engine
    return server_engine(url, pool_size=2, max_overflow=3)
