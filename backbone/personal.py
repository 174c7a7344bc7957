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
overwritten in the file) or in the service's PostgreSQL database (`subject_keys` and
`service_secrets` tables).

Every row of the vault belongs to one service (`service`, part of the primary key): two services
whose settings put them in the same database still keep separate keys, each reads only its own
rows, and erasing a subject in one never destroys another's copy of the key. (`owner`, beside
it, is the service that created the subject: the one whose keys topic speaks for it.) Vaults
written before that column existed are migrated when the service starts (`_migrate_legacy`).

Several instances of a service share one vault (PostgreSQL), but each keeps keys in memory.
So each instance looks for erasures made by the others (`sync_erasures`: the erasures of the
last minutes, by `erased_at`), about every second, and forgets those keys and whatever its
listeners derived from them (the aggregate cache): every replica stops decrypting an erased
subject within about a second. The hosts' clocks must agree within `ERASURE_WINDOW` (NTP).
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import Transcoding

from backbone.logging import get_logger
from backbone.sqltypes import UtcDateTime, creating_tables, server_engine
from contracts.personal import SUBJECT_KEY_CONSUMERS, Sealed, SubjectKey

log = get_logger(__name__)

R = TypeVar("R")

ERASED_TEXT = "[erased]"
CACHE_SIZE = 100_000  # keys kept in memory (32 bytes each); the rest are read from the vault
ERASURE_SYNC_SECONDS = 1.0  # how often an instance looks for erasures made by the others
ERASURE_WINDOW = timedelta(minutes=5)  # erasures this recent are looked at (clock skew margin)


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


def stored_ciphertext(value: Personal) -> str | None:
    """The ciphertext the event store holds for this very value (sealed with its subject's key
    when the event was saved, or read back from the store), if this object went through the
    store; None otherwise. A subject's key never changes (it is created once and only ever
    destroyed), so whoever must seal the value again with that key (the relay, for the bus) may
    send this one instead: the same subject, key and plaintext, without another AES-GCM seal.
    Check that the subject is not erased first (`Vault.is_erased`): that is not tracked here."""
    return value.__dict__.get("_stored_ciphertext")


def _remember_ciphertext(value: Personal, ciphertext: str) -> None:
    # Kept beside the dataclass's fields, not as one: equality, hashing, `repr` and
    # `dataclasses.replace` see the subject and the value only.
    object.__setattr__(value, "_stored_ciphertext", ciphertext)


metadata = sa.MetaData()
subject_keys = sa.Table(
    "subject_keys",
    metadata,
    # Keyed by subject, then service (whose vault the row is in): the subject first, so that a
    # batch of subjects (`subject_id IN (...)`) is found through the index whatever the planner
    # thinks of a column that holds one or two values.
    sa.Column("subject_id", sa.String(36), primary_key=True),
    sa.Column("service", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(64), nullable=False),  # the service that created the subject
    sa.Column("key", sa.LargeBinary, nullable=True),  # NULL once erased
    sa.Column("erased_at", UtcDateTime, nullable=True, index=True),
    sa.Column("published", sa.Boolean, nullable=False, default=False),  # on the keys topic
)
# What the relay reads before every batch (`Vault.unpublished`): the few keys not yet on the
# keys topic, in subject order. Without it the query walked every subject of the vault (the
# primary key, in subject order) to find them: 15 % of bookings' busy time in a soak with
# 20,000 bookings, and more as the vault grows. Partial: published rows (nearly all) are not in
# it. Made on start in vaults created before it (`metadata.create_all` adds no index to a
# table that exists).
UNPUBLISHED_INDEX = sa.Index(
    "ix_subject_keys_unpublished",
    subject_keys.c.service,
    subject_keys.c.subject_id,
    sqlite_where=subject_keys.c.published.is_(False),
    postgresql_where=subject_keys.c.published.is_(False),
)
service_secrets = sa.Table(
    "service_secrets",
    metadata,
    sa.Column("service", sa.String(64), primary_key=True),  # whose secret it is
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.LargeBinary, nullable=False),
)


class Vault:
    """One service's subject keys: its own subjects' and copies of other services'."""

    def __init__(self, url: str, service: str):
        self.service = service
        self.engine = _engine(url)
        # This service's rows only (others may share the table); the lookups are built once.
        self._mine = subject_keys.c.service == service
        by_subject = sa.and_(self._mine, subject_keys.c.subject_id == sa.bindparam("subject"))
        self._select_row = sa.select(subject_keys).where(by_subject)
        self._select_key = sa.select(subject_keys.c.key).where(by_subject)
        _migrate_legacy(self.engine, service)
        creating_tables(lambda: metadata.create_all(self.engine))
        creating_tables(lambda: UNPUBLISHED_INDEX.create(self.engine, checkfirst=True))
        self._cache: OrderedDict[UUID, bytes | None] = OrderedDict()  # most recent last
        self._lock = threading.Lock()
        self._listeners: list[Callable[[list[UUID]], None]] = []
        self._erasures_seen: set[UUID] = set()  # of the window, already handled here
        self._next_sync = 0.0

    # ------------------------------------------------------- erasures by other instances

    def on_erased(self, listener: Callable[[list[UUID]], None]) -> None:
        """Call `listener(subject_ids)` when `sync_erasures` finds erasures made elsewhere."""
        self._listeners.append(listener)

    def sync_erasures(self) -> list[UUID]:
        """Forget the keys that another instance sharing this vault erased (blocking). Returns
        the subjects newly seen as erased; the listeners get them too."""
        self._next_sync = time.monotonic() + ERASURE_SYNC_SECONDS
        since = datetime.now(UTC) - ERASURE_WINDOW
        with self.engine.connect() as conn:
            recent = {
                UUID(subject)
                for subject in conn.execute(
                    sa.select(subject_keys.c.subject_id).where(self._mine, subject_keys.c.erased_at >= since)
                ).scalars()
            }
        with self._lock:
            new = sorted(recent - self._erasures_seen)
            self._erasures_seen = recent  # older ones leave the window, and never come back
            for subject_id in new:
                if subject_id in self._cache:
                    self._cache[subject_id] = None
        if new:
            for listener in self._listeners:
                listener(new)
        return new

    def _sync_if_due(self) -> None:
        if time.monotonic() >= self._next_sync:
            self.sync_erasures()

    # --------------------------------------------------------------------- keys

    def key_for(self, subject_id: UUID) -> bytes:
        """The key of a subject of this service, created on first use. Raises KeyError if
        the subject was erased (nothing new may be written about it). Another instance on the
        same vault creating it at the same moment is no error: its key is the one used."""
        key = self._lookup(subject_id)
        if key is not None:
            return key
        return _once_more_on_conflict(lambda: self._key_for(subject_id))

    def _key_for(self, subject_id: UUID) -> bytes:
        with self.engine.begin() as conn:
            row = conn.execute(self._select_row, {"subject": str(subject_id)}).first()
            if row is not None:
                if row.key is None:
                    raise KeyError(f"subject {subject_id} was erased")
                return self._remember(subject_id, row.key)
            key = AESGCM.generate_key(bit_length=256)
            conn.execute(
                sa.insert(subject_keys).values(
                    service=self.service,
                    subject_id=str(subject_id),
                    owner=self.service,
                    key=key,
                    published=False,
                )
            )
        return self._remember(subject_id, key)

    def create_keys(self, subject_ids: Iterable[UUID]) -> None:
        """Create, in one transaction, the keys of the subjects this vault has never seen (as
        `seal` would one by one): one disk sync for a batch of new subjects instead of one each.
        Known subjects (own, copies, erased) are left as they are."""
        unseen = {s for s in subject_ids if self._lookup(s) is None}
        if unseen:
            _once_more_on_conflict(lambda: self._create_keys(unseen))

    def _create_keys(self, unseen: set[UUID]) -> None:
        with self.engine.begin() as conn:
            known = {
                UUID(row)
                for row in conn.execute(
                    sa.select(subject_keys.c.subject_id).where(
                        self._mine, subject_keys.c.subject_id.in_([str(s) for s in unseen])
                    )
                ).scalars()
            }
            created = {s: AESGCM.generate_key(bit_length=256) for s in unseen - known}
            if created:
                conn.execute(
                    sa.insert(subject_keys),
                    [
                        {
                            "service": self.service,
                            "subject_id": str(s),
                            "owner": self.service,
                            "key": key,
                            "published": False,
                        }
                        for s, key in created.items()
                    ],
                )
        for subject_id, key in created.items():
            self._remember(subject_id, key)

    def key(self, subject_id: UUID) -> bytes | None:
        """The key to open a subject's data: None if erased; UnknownSubject if not known yet."""
        self._sync_if_due()
        with self._lock:
            if subject_id in self._cache:
                return self._cache[subject_id]
        with self.engine.connect() as conn:
            row = conn.execute(self._select_key, {"subject": str(subject_id)}).first()
        if row is None:
            raise UnknownSubject(f"no key for subject {subject_id} yet")
        return self._remember(subject_id, row.key)

    def preload(self, subject_ids: Iterable[UUID]) -> None:
        """Read the keys of these subjects that are not in memory yet, in one query (before
        opening a batch of events: one query rather than one per subject). Subjects not
        known here are left for `key` to report."""
        missing = [s for s in set(subject_ids) if self._lookup(s) is None and not self._known_erased(s)]
        for first in range(0, len(missing), 500):
            chunk = missing[first : first + 500]
            with self.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(subject_keys.c.subject_id, subject_keys.c.key).where(
                        self._mine, subject_keys.c.subject_id.in_([str(s) for s in chunk])
                    )
                ).all()
            for row in rows:
                self._remember(UUID(row.subject_id), row.key)

    def _known_erased(self, subject_id: UUID) -> bool:
        with self._lock:
            return subject_id in self._cache and self._cache[subject_id] is None

    def accept(self, record: SubjectKey) -> None:
        """Take a key (or an erasure) published by the subject's owner. Idempotent; an
        erasure is final: a late copy of the key never brings it back."""
        self.accept_all([record])

    def accept_all(self, records: Sequence[SubjectKey]) -> None:
        """`accept` for many records, in one transaction (a batch from a keys topic)."""
        _once_more_on_conflict(lambda: self._accept_all(records))

    def _accept_all(self, records: Sequence[SubjectKey]) -> None:
        with self.engine.begin() as conn:
            for record in records:
                row = conn.execute(self._select_row, {"subject": str(record.subject_id)}).first()
                if row is not None and row.owner != record.owner:
                    # Only a subject's owner speaks for it. An erasure heard before any key
                    # names its owner only provisionally: the first key, from its real owner,
                    # replaces it (a service cannot erase another's subject ahead of its key).
                    if row.key is None and not record.erased and record.key is not None:
                        conn.execute(
                            sa.update(subject_keys)
                            .where(self._subject(record.subject_id))
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
                            service=self.service,
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

        def erase_in_one_transaction() -> None:
            with self.engine.begin() as conn:
                self._erase_in(conn, subject_id, self.service, published=False)

        _once_more_on_conflict(erase_in_one_transaction)
        with self._lock:
            self._cache[subject_id] = None
            self._erasures_seen.add(subject_id)  # handled here already
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
        query = sa.select(service_secrets.c.value).where(
            service_secrets.c.service == self.service, service_secrets.c.name == name
        )
        try:
            with self.engine.begin() as conn:
                value = conn.execute(query).scalar()
                if value is None:
                    value = os.urandom(32)
                    conn.execute(
                        sa.insert(service_secrets).values(service=self.service, name=name, value=value)
                    )
                return value
        except sa.exc.IntegrityError:  # another instance created it at the same moment
            with self.engine.connect() as conn:
                return conn.execute(query).scalar_one()

    # -------------------------------------------------------------- publication

    def unpublished(self, limit: int = 500, after: UUID | None = None) -> list[SubjectKey]:
        """This service's keys and erasures that are not on its keys topic yet, in subject id
        order from after `after`: paging on with the last one read makes one pass, which ends
        however fast new keys arrive (those behind it wait for the next pass)."""
        query = sa.select(subject_keys).where(
            self._mine, subject_keys.c.owner == self.service, subject_keys.c.published.is_(False)
        )
        if after is not None:
            query = query.where(subject_keys.c.subject_id > str(after))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(subject_keys.c.subject_id).limit(limit)).all()
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
        """Mark keys (and erasures) as on the keys topic, unless they changed since they were
        read: one statement for each kind, executed for many rows at once."""
        with self.engine.begin() as conn:
            for erased in (False, True):
                rows = [{"subject": str(r.subject_id)} for r in records if (r.key is None) == erased]
                if not rows:
                    continue
                still_same = subject_keys.c.key.is_(None) if erased else subject_keys.c.key.isnot(None)
                conn.execute(
                    sa.update(subject_keys)
                    .where(self._mine, subject_keys.c.subject_id == sa.bindparam("subject"), still_same)
                    .values(published=True),
                    rows,
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

    def _subject(self, subject_id: UUID) -> sa.ColumnElement[bool]:
        return sa.and_(self._mine, subject_keys.c.subject_id == str(subject_id))

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
        row = conn.execute(sa.select(subject_keys.c.erased_at).where(self._subject(subject_id))).first()
        if row is None:
            conn.execute(
                sa.insert(subject_keys).values(
                    service=self.service,
                    subject_id=str(subject_id),
                    owner=owner,
                    key=None,
                    erased_at=now,
                    published=published,
                )
            )
        elif row.erased_at is None:
            conn.execute(
                sa.update(subject_keys)
                .where(self._subject(subject_id))
                .values(key=None, erased_at=now, published=published)
            )


def _once_more_on_conflict(work: Callable[[], R]) -> R:
    """`work()`, one vault transaction that reads rows and then inserts those it did not find,
    run once more if another instance sharing the vault inserted one of them in between (a
    unique-key conflict): the second run reads that row and uses it. Without this, two
    instances sealing a new subject at the same moment (the tenant's staff address, for the
    first cancellations of a burst) made one of them fail, and its inbox dead-letter the event
    that needed the key: found by tests/integration/test_scale_out.py."""
    try:
        return work()
    except sa.exc.IntegrityError as error:
        log.info(
            "a subject key was written by another instance at the same moment; reading it",
            error=str(error.orig),
        )
        return work()


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
        _remember_ciphertext(obj, sealed.ciphertext)  # (see `stored_ciphertext`)
        return {"s": str(obj.subject_id), "c": sealed.ciphertext}

    def decode(self, data: dict[str, str]) -> Personal:
        subject_id = UUID(data["s"])
        if not data["c"]:
            return Personal(subject_id, None)
        key = self.vault.key(subject_id)  # as `Vault.open`, without a model per value
        if key is None:
            return Personal(subject_id, None)
        value = Personal(subject_id, decrypt(key, subject_id, data["c"]))
        _remember_ciphertext(value, data["c"])
        return value


# ------------------------------------------------------------------------- migration

_VAULT_TABLES = ("subject_keys", "service_secrets")
_ASIDE = "_before_service"  # where a legacy table waits, inside the migration's transaction


def _legacy_tables(bind: sa.Engine | sa.Connection) -> list[str]:
    """The vault's tables that exist in their first shape: keyed without the service."""
    inspector = sa.inspect(bind)
    return [
        table
        for table in _VAULT_TABLES
        if inspector.has_table(table) and "service" not in {c["name"] for c in inspector.get_columns(table)}
    ]


def _migrate_legacy(engine: sa.Engine, service: str) -> None:
    """Move the rows of a vault written before `service` was part of its keys to the new shape.

    Before, `subject_keys` was keyed by subject alone and `service_secrets` by name alone, so
    services configured onto one database shared one vault: one key per subject for all of
    them, and an erasure by one destroyed it for all. Which services shared it is known from
    the database itself: a service's vault was always in the database of its event store, whose
    tables eventsourcing names `<service>_events` and `<service>_tracking`. Alone, this service
    takes every row (a SQLite vault is always one service's file). Shared, a subject's key goes
    to its owner and to the services that consume the owner's keys topic
    (`SUBJECT_KEY_CONSUMERS`): exactly the copies the owner's erasures reach. A copy for any
    other service would outlive an erasure, so none is made (the row of an owner not known there
    goes to every service, rather than to none). Secrets go to every service. The keys and
    secrets stay the same, so everything sealed still opens and the blind indexes still match.

    One transaction, under a lock (instances starting together wait, then find the new shape):
    each old table is copied aside, replaced by the new one, its rows copied in for each service,
    and dropped. A crash anywhere leaves the old table as it was; once done, a start finds the
    new shape and does nothing.
    """
    if not _legacy_tables(engine):
        return
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(hashtext('booking-accounts: vault migration'))")
            )
        else:  # SQLite: take the write lock now (pysqlite would only begin before the first write)
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        legacy = _legacy_tables(conn)  # again, under the lock
        if not legacy:
            return
        services = _vault_services(conn, service)
        for table in legacy:
            conn.exec_driver_sql(f"CREATE TABLE {table}{_ASIDE} AS SELECT * FROM {table}")  # noqa: S608
            conn.exec_driver_sql(f"DROP TABLE {table}")
        metadata.create_all(conn)
        rows = {}
        for table in legacy:
            columns = ", ".join(c.name for c in metadata.tables[table].columns if c.name != "service")
            copy = f"INSERT INTO {table} (service, {columns}) SELECT :service, {columns} FROM {table}{_ASIDE}"  # noqa: S608
            if table == "subject_keys":
                owners = conn.exec_driver_sql(f"SELECT DISTINCT owner FROM {table}{_ASIDE}").scalars().all()  # noqa: S608
                whose = sa.text(copy + " WHERE owner IN :owners").bindparams(
                    sa.bindparam("owners", expanding=True)
                )
                for holder in services:
                    theirs = [o for o in owners if holder in _holders(o, services)]
                    if theirs:
                        conn.execute(whose, {"service": holder, "owners": theirs})
            else:
                for holder in services:
                    conn.execute(sa.text(copy), {"service": holder})
            rows[table] = conn.exec_driver_sql(f"SELECT count(*) FROM {table}{_ASIDE}").scalar()  # noqa: S608
            conn.exec_driver_sql(f"DROP TABLE {table}{_ASIDE}")
    log.warning(
        "the vault was migrated: its rows are now kept per service",
        services=services,
        subject_keys=rows.get("subject_keys", 0),
        service_secrets=rows.get("service_secrets", 0),
    )


def _holders(owner: str, services: list[str]) -> list[str]:
    """Which of the services that shared a vault keep a copy of a key of `owner`'s subject
    (see `_migrate_legacy`)."""
    if len(services) == 1:
        return services
    readers = [s for s in services if s == owner or s in SUBJECT_KEY_CONSUMERS.get(owner, ())]
    return readers or services


def _vault_services(conn: sa.Connection, service: str) -> list[str]:
    """The services whose vault a legacy table was: this one, and in PostgreSQL every service
    whose event store is in the same database (see `_migrate_legacy`)."""
    found = {service}
    if conn.dialect.name == "postgresql":
        tables = {
            (schema, name)
            for schema, name in conn.execute(
                sa.text(
                    "SELECT table_schema, table_name FROM information_schema.tables "
                    "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
                )
            )
        }
        for schema, name in tables:
            if name.endswith("_events") and (schema, name.removesuffix("_events") + "_tracking") in tables:
                found.add(name.removesuffix("_events"))
    return sorted(found)


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
