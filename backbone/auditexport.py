"""Tamper-evident exports of a service's event log, and their verification.

An export is JSON Lines: a header, one record per event in log order, and an end record.
Every line carries `prev`, the hash of the line before it (64 zeros for the header), and
`hash`, the SHA-256 of the line's canonical JSON without `hash` (keys sorted, no spaces,
UTF-8). Events are numbered from 1 (`seq`). So:

* changing anything in a record breaks its own hash;
* removing, inserting or reordering records breaks the numbering and the links;
* changing a record *and* recomputing the hashes after it can only be caught against a hash
  kept elsewhere: the end record's hash (the *head*) is printed when exporting, so keep it, or
  seal the export with a secret key (HMAC-SHA256, `key=`), which nobody without the key can
  recompute.

`verify` reads an export as a stream and reports the first place where it breaks and what
happened there (altered, removed, reordered, inserted, truncated).

    {"kind":"header","format":"booking-accounts.audit-export/1","service":"bookings",...}
    {"kind":"event","seq":1,"position":1,"aggregate_id":"...","event_type":"Booking.Placed",...}
    {"kind":"end","records":1,"last_position":1,...}
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from backbone.audit import AuditLog, AuditRecord

FORMAT = "booking-accounts.audit-export/1"
GENESIS = "0" * 64


@dataclass(frozen=True)
class Selection:
    """Which events an export holds: a range of log positions, a time range, one tenant."""

    from_position: int = 1
    to_position: int | None = None  # default: the head of the log when the export starts
    since: datetime | None = None  # occurred_at >= since
    until: datetime | None = None  # occurred_at < until
    tenant_id: str | None = None

    def matches(self, record: AuditRecord) -> bool:
        if self.tenant_id is not None and record.tenant_id != self.tenant_id:
            return False
        if self.since is None and self.until is None:
            return True
        at = datetime.fromisoformat(record.occurred_at)
        return (self.since is None or at >= self.since) and (self.until is None or at < self.until)

    def describe(self) -> dict[str, Any]:
        return {
            "from_position": self.from_position,
            "to_position": self.to_position,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "tenant_id": self.tenant_id,
        }


def canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(record: dict[str, Any], key: bytes | None) -> str:
    """The hash of a record without its `hash` field."""
    body = canonical({k: v for k, v in record.items() if k != "hash"})
    if key is not None:
        return hmac.new(key, body, hashlib.sha256).hexdigest()
    return hashlib.sha256(body).hexdigest()


@dataclass
class Export:
    """One export in progress: iterate `lines()`; afterwards `records` and `head` are set."""

    log: AuditLog
    service: str
    selection: Selection = field(default_factory=Selection)
    key: bytes | None = None
    on_progress: Callable[[int], None] | None = None  # called with each scanned position
    records: int = 0
    head: str | None = None
    last_position: int | None = None

    def lines(self) -> Iterator[str]:
        upto = self.selection.to_position or self.log.head()
        selection = Selection(**{**asdict(self.selection), "to_position": upto})
        prev = GENESIS
        header = {
            "kind": "header",
            "format": FORMAT,
            "service": self.service,
            "exported_at": datetime.now(UTC).isoformat(),
            "selection": selection.describe(),
            "sealed_with_key": self.key is not None,
            "personal_data": "sealed values are shown as whose they are, never opened",
        }
        prev = yield from self._emit(header, prev)
        for record in self.log.scan(after=selection.from_position - 1, upto=upto):
            if self.on_progress is not None:
                self.on_progress(record.position or 0)
            if not selection.matches(record):
                continue
            self.records += 1
            self.last_position = record.position
            prev = yield from self._emit({"kind": "event", "seq": self.records, **record.as_dict()}, prev)
        end = {"kind": "end", "records": self.records, "last_position": self.last_position}
        self.head = yield from self._emit(end, prev)

    def _emit(self, record: dict[str, Any], prev: str) -> Iterator[str]:
        record["prev"] = prev
        record["hash"] = digest(record, self.key)
        yield canonical(record).decode() + "\n"
        return record["hash"]


@dataclass(frozen=True)
class Verification:
    ok: bool
    records: int  # events found intact before the verdict
    head: str | None = None
    problem: str | None = None  # altered | removed | reordered | duplicated | inserted | truncated | ...
    line: int | None = None  # where the export breaks (1-based)
    seq: int | None = None  # the record concerned: the altered, missing or moved one
    position: int | None = None  # its position in the service's log, when known
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify(lines: Iterable[str], key: bytes | None = None, expect_head: str | None = None) -> Verification:
    """Check an export from its first line to its last; report the first break."""
    return _Verifier(key, expect_head).run(enumerate(lines, start=1))


class _Verifier:
    def __init__(self, key: bytes | None, expect_head: str | None):
        self.key = key
        self.expect_head = expect_head
        self.prev = GENESIS  # hash of the last intact line
        self.previous: dict[str, Any] = {}  # the last intact record
        self.expected = 1  # the seq the next event record must have

    def run(self, numbered: Iterator[tuple[int, str]]) -> Verification:
        number = 0
        for number, text in numbered:
            try:
                record = json.loads(text)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except ValueError as error:
                return self.broken("malformed", number, f"line {number} is not a JSON object: {error}")
            verdict = self.check(record, number, numbered)
            if verdict is not None:
                return verdict
        if number == 0:
            return self.broken("truncated", 0, "the export is empty")
        return self.broken("truncated", number, f"the export ends after record {self.expected - 1}: no end")

    def check(
        self, record: dict[str, Any], number: int, rest: Iterator[tuple[int, str]]
    ) -> Verification | None:
        kind = record.get("kind")
        if number == 1:
            if kind != "header" or record.get("format") != FORMAT:
                return self.broken("not_an_export", 1, f"line 1 is not the header of a {FORMAT} export")
            if record.get("sealed_with_key") and self.key is None:
                return self.broken("key_required", 1, "this export was sealed with a key: give the key")
        elif kind not in ("event", "end"):
            return self.broken("inserted", number, f"line {number} is not an event or end record")
        if record.get("hash") != digest(record, self.key):
            what = f"record {record.get('seq')}" if kind == "event" else f"the {kind} record"
            return self.broken("altered", number, f"{what} (line {number}) does not match its hash", record)
        if kind == "event" and record.get("seq") != self.expected:
            return self.misplaced(record, number, rest)
        if record.get("prev") != self.prev:
            before = f"record {self.expected - 1}" if self.previous.get("kind") == "event" else "the header"
            return self.broken(
                "altered",
                number - 1,
                f"the chain breaks between {before} and line {number}: {before} was changed and "
                "re-hashed, or a line was replaced",
                self.previous,
            )
        if kind == "event" and (record.get("position") or 0) <= (self.previous.get("position") or 0):
            return self.broken("reordered", number, f"record {self.expected} is out of log order", record)
        self.prev, self.previous = record["hash"], record
        if kind == "event":
            self.expected += 1
        if kind != "end":
            return None
        if record.get("records") != self.expected - 1:
            return self.broken("removed", number, "the end record counts a different number of records")
        extra = next(rest, None)
        if extra is not None:
            return self.broken("inserted", extra[0], f"line {extra[0]} comes after the end record")
        if self.expect_head is not None and not hmac.compare_digest(self.prev, self.expect_head):
            return self.broken("wrong_head", number, "the export does not end with the expected head hash")
        return Verification(True, self.expected - 1, self.prev, detail=f"{self.expected - 1} records intact")

    def misplaced(self, record: dict[str, Any], number: int, rest: Iterator[tuple[int, str]]) -> Verification:
        """A record that is not the next one: does the missing one come later (moved) or not?"""
        seq, expected = record.get("seq"), self.expected
        if isinstance(seq, int) and 0 < seq < expected:
            return self.broken("duplicated", number, f"record {seq} appears a second time", record)
        for later, text in rest:
            try:
                found = json.loads(text).get("seq")
            except (ValueError, AttributeError):
                continue
            if found == expected:
                detail = f"record {expected} should be at line {number} but comes later, at line {later}"
                return self.broken("reordered", number, detail, {"seq": expected})
        detail = f"record {expected} is missing: line {number} holds record {seq}"
        return self.broken("removed", number, detail, {"seq": expected})

    def broken(self, problem: str, line: int, detail: str, record: dict | None = None) -> Verification:
        record = record or {}
        return Verification(
            False,
            self.expected - 1,
            problem=problem,
            line=line,
            seq=record.get("seq"),
            position=record.get("position"),
            detail=detail,
        )
