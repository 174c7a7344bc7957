"""Personal data in read models: sealed columns, and lookups through a blind index.

A read model is a copy, and copies travel: PostgreSQL's write-ahead log, its streaming replicas,
WAL archives and base backups keep every row that was ever written, long after a vacuum or an
erasure scrubbed the table. So no read model keeps personal data in the clear:

* **Sealed columns.** A personal value is stored as the subject's ciphertext (the event store's
  format: AES-256-GCM under the subject's key, `backbone.personal`), with the subject id beside
  it, and opened through the vault only to answer a request. Once the subject's key is destroyed
  the column reads as erased, wherever its copies went: no scrubbing step is needed.
* **A blind index for lookups.** Exact lookups (the bookings of a verified address) and the
  staff directory's search compare keyed hashes, never plaintext: HMAC-SHA-256 of the normalised
  value under a per-tenant secret kept in the service's vault (never published). Whoever holds
  the database, a backup or a replica but not the vault cannot test a guessed address against
  it, and the same address gives unrelated tokens in two tenants.

What the search can match (`search_tokens`/`query_tokens`): words, not arbitrary substrings.
Each name, email and phone is split into words (letters and digits; an email's local part and
domain split at `.`, `-`, `_`, `+`, `@`), normalised (Unicode NFKC, case-folded, accents
removed), and every *prefix* of every word (up to 24 characters) gets a token; a phone also
gets the prefixes of its digits run together. A query matches a row when every word of the
query is a prefix of some word of the row: "ada lov" finds Ada Lovelace, "lovelace@exa" finds
ada.lovelace@example.com, "0660 12" finds +43 660 123. It cannot match the middle of a word
("velace"), misspellings, or a phone written with other digits (0660 vs +43 660).

Tokens of short prefixes (up to 4 characters: "gm", "com", "mari") are kept in memory once
computed: thousands of customers share them, and a rebuild would otherwise compute the same
keyed hash millions of times. Longer prefixes, and whole values, are never kept.

Erasure: the index rows of a subject are deleted with its data (the tokens are keyed hashes of
data that is gone; removing them leaves nothing to link).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import unicodedata
from collections.abc import Iterable
from uuid import UUID

from backbone.personal import Personal, UnknownSubject, Vault
from contracts.personal import Sealed

MAX_PREFIX = 24  # longer words are indexed (and searched) by their first 24 characters
SHORT_PREFIX = 4  # tokens of prefixes up to this long are kept in memory (module docstring)
SHORT_PREFIXES_KEPT = 100_000
_WORD = re.compile(r"\w+", re.UNICODE)


def normalise(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def words(text: str) -> list[str]:
    return [w for w in _WORD.findall(normalise(text).replace("_", " ")) if w]


class BlindIndex:
    """Keyed hashes of personal values, per tenant, for lookups that never see plaintext."""

    def __init__(self, vault: Vault):
        self.vault = vault
        self._keys: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._short: dict[tuple[str, str], str] = {}  # (tenant, prefix) -> token (module docstring)

    def _key(self, tenant_id: str) -> bytes:
        with self._lock:
            key = self._keys.get(tenant_id)
        if key is None:
            # service_secrets names are at most 64 characters; tenant ids may be 64 themselves.
            name = "blind-index:" + hashlib.sha256(tenant_id.encode()).hexdigest()[:48]
            key = self.vault.secret(name)
            with self._lock:
                self._keys[tenant_id] = key
        return key

    def _token(self, tenant_id: str, kind: str, text: str) -> str:
        mac = hmac.digest(self._key(tenant_id), f"{kind}\0{text}".encode(), "sha256")
        return mac[:16].hex()  # 128 bits: collisions are not a practical concern

    def _prefix_token(self, tenant_id: str, prefix: str) -> str:
        if len(prefix) > SHORT_PREFIX:
            return self._token(tenant_id, "prefix", prefix)
        token = self._short.get((tenant_id, prefix))
        if token is None:
            token = self._token(tenant_id, "prefix", prefix)
            if len(self._short) >= SHORT_PREFIXES_KEPT:
                self._short.clear()
            self._short[(tenant_id, prefix)] = token
        return token

    def exact(self, tenant_id: str, value: str) -> str:
        """The token of a whole value (e.g. an email address), for equality lookups."""
        return self._token(tenant_id, "exact", normalise(value).strip())

    def search_tokens(self, tenant_id: str, *values: str | None, phone: str | None = None) -> set[str]:
        """Every token a row with these values can be found by (see the module docstring)."""
        found: set[str] = set()
        texts = [v for v in values if v]
        if phone:
            texts.append(phone)
            digits = "".join(ch for ch in phone if ch.isdigit())
            if digits:
                texts.append(digits)
        # Each prefix hashed once: a name's words are often in the email too ("Ada Lovelace",
        # ada.lovelace@...), and a word's prefixes are those of its longer repeats.
        indexed = {word[:MAX_PREFIX] for text in texts for word in words(text)}
        prefixes = {word[:n] for word in indexed for n in range(1, len(word) + 1)}
        for prefix in prefixes:
            found.add(self._prefix_token(tenant_id, prefix))
        return found

    def query_tokens(self, tenant_id: str, query: str) -> list[str]:
        """One token per word of a search query; a row matches when it has all of them."""
        return sorted({self._prefix_token(tenant_id, w[:MAX_PREFIX]) for w in words(query)})


# ---------------------------------------------------------------------- sealed columns


def seal_column(vault: Vault, value: Personal | None) -> str | None:
    """What a read model stores for a personal value: its ciphertext (None if erased or absent).
    The subject id is kept in its own column by the caller."""
    if value is None or value.value is None:
        return None
    try:
        return vault.seal(value.subject_id, value.value).ciphertext
    except KeyError:  # the subject was erased since the event was read: nothing to keep
        return None


def open_column(vault: Vault, subject_id: str | UUID | None, ciphertext: str | None) -> str | None:
    """The plain value of a sealed column, or None if erased, absent or its key unknown here."""
    if subject_id is None or not ciphertext:
        return None
    try:
        opened = vault.open(Sealed(subject_id=UUID(str(subject_id)), ciphertext=ciphertext))
    except UnknownSubject:
        return None
    return opened.value if opened is not None else None


def open_columns(vault: Vault, row: dict, subject_column: str, columns: Iterable[str]) -> dict:
    """A copy of `row` with the named sealed columns opened (absent or erased: None)."""
    opened = dict(row)
    for column in columns:
        opened[column] = open_column(vault, row.get(subject_column), row.get(column))
    return opened
