"""A service's event log as audit tooling reads it: every event with what, when, who and why.

Audit tooling (the ops CLI's `history` and `export`, and the read-only audit API that every
service mounts, `backbone.auditapi`) reads events through an `AuditLog`. Each event becomes an
`AuditRecord`: its place in the log, the aggregate and version, the event type, when it was
recorded, the tenant, who caused it (`customer:<id>`, `staff:<id>` or `service:<name>`, from
the event's `meta`) and the correlation and causation ids, plus the event's own data.

What an auditor sees of that data (decided here, once, for every audit channel):

* Personal data is never shown in the clear. The log is decoded *without opening* sealed
  values: a personal value shows whose it is and whether it can still be read
  (`{"subject_id": ..., "sealed": true}`) or its subject was erased
  (`{"subject_id": ..., "erased": true}`). An erased customer therefore appears as erased in
  history and exports, never with their old data.
* Fields that hold secrets or their hashes (password hashes, verification token hashes, links
  sealed for the notifier) show as "[redacted]".
* Only an operator who runs the CLI with the service's own configuration (and so could read its
  vault anyway) may ask for personal data to be opened (`history --reveal`); the HTTP API and
  exports never do.

`stored_sha256` is the hash of the event exactly as stored, so an auditor with database access
can check any record against the store even though the rendering redacts.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.persistence import JSONTranscoder, Mapper, Transcoding

from backbone.eventstore import ServiceApplication
from backbone.personal import Personal, Vault

REDACTED = "[redacted]"
_SECRET_FIELDS = re.compile(r"password|secret|token|hash|link|authorization|cookie", re.I)
_TECHNICAL_FIELDS = {"originator_id", "originator_version", "timestamp", "meta", "originator_topic"}


@dataclass(frozen=True)
class SealedValue:
    """A personal value as audit tooling sees it: whose, and whether it can still be read."""

    subject_id: UUID
    erased: bool


@dataclass(frozen=True)
class AuditRecord:
    position: int | None  # in the service's notification log (None in an aggregate's history)
    aggregate_id: str
    aggregate_type: str
    version: int
    event_type: str  # e.g. "Booking.Cancelled"
    topic: str  # the stored event's class, "module:Class.Event"
    occurred_at: str
    tenant_id: str | None
    actor: str
    correlation_id: str | None
    causation_id: str | None
    data: dict[str, Any]
    stored_sha256: str

    def as_dict(self) -> dict[str, Any]:
        # Shallow on purpose: `data` is built fresh for each record (asdict's deep copy would be
        # half the cost of an export).
        return {f.name: getattr(self, f.name) for f in fields(self)}


class AuditLog:
    """Reads one service's event store for audit (blocking: call it off the event loop)."""

    def __init__(self, app: ServiceApplication, reveal: bool = False):
        self.app = app
        self.reveal = reveal
        self._mapper = app.mapper if reveal else _sealed_mapper(app)

    def head(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def events(self, after: int = 0, limit: int = 500, upto: int | None = None) -> list[AuditRecord]:
        """Events recorded after position `after` (and up to `upto`), in log order."""
        notifications = self.app.recorder.select_notifications(
            start=after, limit=limit, stop=upto, inclusive_of_start=False
        )
        return [self.record(n, n.id) for n in notifications]

    def scan(self, after: int = 0, upto: int | None = None, page: int = 1000) -> Iterator[AuditRecord]:
        """Every event after `after` up to `upto` (default: the head when the scan starts)."""
        upto = self.head() if upto is None else upto
        while after < upto:
            batch = self.events(after, page, upto)
            if not batch:
                return
            yield from batch
            after = batch[-1].position or upto

    def history(self, aggregate_id: UUID) -> list[AuditRecord]:
        """Every event of one aggregate, oldest first (empty if there is no such aggregate)."""
        return [self.record(stored, None) for stored in self.app.recorder.select_events(aggregate_id)]

    def record(self, stored: Any, position: int | None) -> AuditRecord:
        event = self._mapper.to_domain_event(stored)
        state = vars(event)
        meta = state.get("meta") or {}
        qualname = stored.topic.partition(":")[2]
        data = {k: v for k, v in state.items() if k not in _TECHNICAL_FIELDS}
        tenant = data.get("tenant_id") if isinstance(data.get("tenant_id"), str) else None
        return AuditRecord(
            position=position,
            aggregate_id=str(stored.originator_id),
            aggregate_type=qualname.rpartition(".")[0] or qualname,
            version=stored.originator_version,
            event_type=qualname,
            topic=stored.topic,
            occurred_at=_iso(state.get("timestamp")),
            tenant_id=tenant or meta.get("tenant_id"),
            actor=meta.get("actor") or "unknown",
            correlation_id=meta.get("correlation_id"),
            causation_id=meta.get("causation_id"),
            data=_render(data),
            stored_sha256=hashlib.sha256(stored.state).hexdigest(),
        )


SEALED_MARK, ERASED_MARK = "\u2039sealed\u203a", "\u2039erased\u203a"  # ‹sealed›, ‹erased›  # noqa: RUF003


def shown(value: Any) -> str:
    """A rendered value for a human, on one line: personal values as SEALED_MARK, ERASED_MARK
    or the value (revealed), nested values inline."""
    if isinstance(value, dict) and "subject_id" in value and len(value) == 2:
        if value.get("erased"):
            return ERASED_MARK
        if value.get("sealed"):
            return SEALED_MARK
        return shown(value.get("value"))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {shown(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(shown(v) for v in value) + "]"
    return " ".join(str(value).split())


def folded(data: dict[str, Any], width: int = 100, prefix: str = "") -> list[str]:
    """A record's data for a table: one line per field (a nested record's fields as
    `outer.inner`), each cut to `width` characters. `--json` keeps everything."""
    lines = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        personal = isinstance(value, dict) and "subject_id" in value and len(value) == 2
        if isinstance(value, dict) and value and not personal:
            lines += folded(value, width, f"{name}.")
            continue
        line = f"{name}: {shown(value)}"
        lines.append(line if len(line) <= width else line[: width - 1] + "…")
    return lines


# ---------------------------------------------------------------------------- internals


class _PersonalUnopened(Transcoding):
    """Decodes a stored personal value without opening it (see `PersonalAsSealed`)."""

    type = SealedValue
    name = "personal"

    def __init__(self, vault: Vault):
        self.vault = vault

    def encode(self, obj: SealedValue) -> dict[str, str]:
        raise TypeError("audit tooling only reads the event store")

    def decode(self, data: dict[str, str]) -> SealedValue:
        subject_id = UUID(data["s"])
        return SealedValue(subject_id, erased=not data["c"] or self.vault.is_erased(subject_id))


def _sealed_mapper(app: ServiceApplication) -> Mapper:
    transcoder = JSONTranscoder()
    app.register_transcodings(transcoder)  # the service's own, so that every stored type decodes,
    transcoder.register(_PersonalUnopened(app.vault))  # except that personal values stay shut
    return Mapper(transcoder, compressor=app.mapper.compressor, cipher=app.mapper.cipher)


@functools.lru_cache(maxsize=1024)
def _secret(key: str) -> bool:
    return bool(_SECRET_FIELDS.search(key))


def _render(value: Any, key: str = "") -> Any:
    if key and value is not None and _secret(key):
        return REDACTED
    if isinstance(value, SealedValue):
        marker = "erased" if value.erased else "sealed"
        return {"subject_id": str(value.subject_id), marker: True}
    if isinstance(value, Personal):
        if value.value is None:
            return {"subject_id": str(value.subject_id), "erased": True}
        return {"subject_id": str(value.subject_id), "value": value.value}
    if isinstance(value, dict):
        return {str(k): _render(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_render(v) for v in value]
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, Decimal | UUID):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return str(value)
