"""The floor: what the design itself costs on this machine, whatever the code around it.

Issue 10 asks for commands end to end at 35 % of a raw aiokafka pipe (SQLite) and rebuilds at
50,000 events/s. Some work is not the code's choice but the design's: every command is verified
(nothing on the bus is believed without proof of who sent it), every record we publish is
signed, a new customer's subject key is sealed for each service that may read their data,
personal values are sealed (AES-GCM) wherever they are stored, lookups go through a blind
index (a keyed hash per searchable prefix), and every row a read model keeps is written. This
measures that work alone, each operation done directly with the library the service uses
(PyNaCl/libsodium, `cryptography`, `hmac`, the `sqlite3` module) and no Python around it, and
prints the least CPU a command or a rebuilt event can take, so the highest rate one process
can reach with this design on this machine. A goal above that line is out of reach of one
process however the code is written; it takes more processes (cores) or another design.

Two parts:

* `commands()`: per PlaceBooking and per RecordPayment: the command's Ed25519 verification
  (with its signing input, as `backbone.signing` makes it), each record published signed, the
  subject key of a new customer sealed for accounts and the notifier (libsodium sealed box), the
  AES-GCM seals (the customer's email and name in the store; email, name, contact and form in
  the read model), a keyed hash per searchable prefix of the customer not shared with others
  (longer than `SHORT_PREFIX`), and the rows written (events, receipt, read model, tokens), at
  the cost of a row in a batch measured here. Kafka's client work (producing 3 records,
  consuming 1: about 17 and 5 µs each, docs/performance.md) is left out, so the bound is
  generous.
* `rebuild(views, events_file)`: per event of a real log, from a read model the real rebuild made of
  it: read the stored events (`SELECT` in pages of 10,000), parse each (orjson), open each
  personal value in it (AES-GCM), one keyed hash per *distinct* search token in the result (a
  token is computed at least once), one AES-GCM seal per sealed column, then every row of
  every table written into an empty file with `executemany` (each table in its final order,
  no secondary index), then its indexes made. Lower than any rebuild can be: the real one also
  reads its vault, decides what each event changes, and gets its rows in event order.

Run alone: `python -m benchmarks.floor` (commands only: no log needed); `benchmarks.pipeline`
prints both beside what the service does (`--parts floor`).
"""

from __future__ import annotations

import argparse
import base64
import gc
import hmac
import json
import os
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from backbone.blindindex import MAX_PREFIX, SHORT_PREFIX, BlindIndex, words
from backbone.personal import Vault, decrypt, encrypt
from backbone.signing import H_SIGNATURE, Signer, TrustedKey

REPEAT = 2_000


def cpu_us(work: Callable[[], Any], repeat: int = REPEAT) -> float:
    """CPU time (this process) of one call of `work`, in µs: the best of three rounds."""
    best = float("inf")
    for _ in range(3):
        began = time.process_time()
        for _ in range(repeat):
            work()
        best = min(best, (time.process_time() - began) / repeat * 1e6)
    return best


@dataclass
class Floor:
    what: str
    parts: dict[str, float]  # µs per command (or per event), by operation
    counts: dict[str, int] = field(default_factory=dict)  # what was counted to price them

    @property
    def us(self) -> float:
        return sum(self.parts.values())

    @property
    def per_second(self) -> float:
        return 1e6 / self.us if self.us else 0.0


# ------------------------------------------------------------------------------ commands


def _place_body() -> bytes:
    """A PlaceBooking as the benchmarks send it (the test support's builder, a new customer)."""
    from datetime import UTC, datetime, timedelta

    from tests.support.bookings import place

    booking_id = uuid.uuid4()
    starts = datetime.now(UTC) + timedelta(days=30)
    return json.dumps(
        place("bench", f"guest-{booking_id.hex[:6]}@example.com", booking_id=booking_id, starts_at=starts)
    ).encode()


def _headers(kind: str) -> dict[str, str]:
    from backbone.signing import SIGNED_HEADERS

    return {name: f"{kind}-{name}-{uuid.uuid4()}" for name in SIGNED_HEADERS}  # what a signature covers


WIDE = (
    "CREATE TABLE t (id TEXT PRIMARY KEY, tenant TEXT, a TEXT, b TEXT, c TEXT, d TEXT,"
    " e INTEGER, f INTEGER, g TEXT, h TEXT, i TEXT, j TEXT)",
    lambda n: (str(uuid.uuid4()), "bench", "x" * 40, "y" * 60, "z" * 90, "w" * 30, n, n, "a", "b", "c", "d"),
)
"""A row of a read model's or a store's width: a UUID key and a dozen columns."""


def _token_table() -> str:
    """`services.bookings.views.search_tokens`, created under the name `t`."""
    from sqlalchemy.dialects import sqlite
    from sqlalchemy.schema import CreateIndex, CreateTable

    from services.bookings.views import search_tokens

    table = search_tokens.to_metadata(sa.MetaData(), name="t")
    statements = [CreateTable(table)] + [CreateIndex(index) for index in table.indexes]
    return ";\n".join(str(statement.compile(dialect=sqlite.dialect())) for statement in statements)


TOKEN = (_token_table(), lambda n: ("bench", os.urandom(16).hex(), str(uuid.uuid4())))
"""A search-token row, as `services.bookings.views.search_tokens` keeps it."""


def row_us(
    shape: tuple[str, Callable[[int], tuple[Any, ...]]], rows: int = 20_000, batch: int = 500
) -> float:
    """A row of `shape` inserted with `executemany` in a batch of `batch`, one commit per
    batch, into a WAL file (synchronous=NORMAL, as the services run): µs of CPU per row."""
    create, make = shape
    with tempfile.TemporaryDirectory(prefix="floor-") as tmp:
        db = sqlite3.connect(Path(tmp) / "rows.sqlite3", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(create)
        made = [make(n) for n in range(rows)]
        marks = ",".join("?" * len(made[0]))
        began = time.process_time()
        for start in range(0, rows, batch):
            db.execute("BEGIN")
            db.executemany(f"INSERT INTO t VALUES ({marks})", made[start : start + batch])  # noqa: S608 (our own names)
            db.execute("COMMIT")
        spent = time.process_time() - began
        db.close()
    return spent / rows * 1e6


def commands() -> list[Floor]:
    publisher, bookings = Signer.generate("storefront"), Signer.generate("bookings")
    consumers = [Signer.generate(name) for name in ("accounts", "notifier")]
    readers = [TrustedKey(s.identity, s.key_id, s.public_key) for s in consumers]
    trusted = TrustedKey(publisher.identity, publisher.key_id, publisher.public_key)
    body = _place_body()
    headers = publisher.sign(body, _headers("PlaceBooking"))
    signature = base64.b64decode(headers[H_SIGNATURE])
    if not trusted.verifies(body, headers, signature):
        raise RuntimeError("the floor's own signature does not verify")
    verify = cpu_us(lambda: trusted.verifies(body, headers, signature))
    published = _headers("BookingPlaced")
    sign = cpu_us(lambda: bookings.sign(body, published))
    subject_key = os.urandom(32)
    seal_key = cpu_us(lambda: readers[0].seal_for(subject_key))
    subject = uuid.uuid4()
    email = "guest-1a2b3c@example.com"
    aes = cpu_us(lambda: encrypt(subject_key, subject, email))
    secret = os.urandom(32)
    mac = cpu_us(lambda: hmac.digest(secret, b"prefix\0guest-1a2b3c", "sha256"))
    # Per commit, what a batch of 500 commands writes (the inbox's and the projection's batches).
    row = row_us(WIDE, rows=20_000, batch=2_000)
    # A new customer's own prefixes (the short ones are shared by thousands and kept in memory).
    customer = json.loads(body)["customer"]
    # As the projection indexes them (`BlindIndex.search_tokens` of the name and email); the
    # short prefixes are shared by thousands of customers and kept in memory: one keyed hash
    # each for this customer's longer prefixes, and one for the exact email.
    index = BlindIndex(Vault("sqlite+pysqlite:///:memory:", "bookings"))
    tokens = len(index.search_tokens("bench", customer.get("name"), customer.get("email")))
    indexed = {
        w[:MAX_PREFIX] for text in (customer.get("name"), customer.get("email")) if text for w in words(text)
    }
    own = {w[:n] for w in indexed for n in range(SHORT_PREFIX + 1, len(w) + 1)}
    token_row = row_us(TOKEN, rows=500 * tokens * 2, batch=500 * tokens)
    place = Floor(
        "PlaceBooking",
        {
            "verify the command (Ed25519)": verify,
            "sign 3 records (outcome, BookingPlaced, subject key)": 3 * sign,
            "seal the subject key for 2 services": 2 * seal_key,
            "6 AES-GCM seals (store 2, read model 4)": 6 * aes,
            f"{len(own) + 1} keyed hashes (own prefixes, exact email)": (len(own) + 1) * mac,
            "4 rows (receipt, event, booking, history)": 4 * row,
            f"{tokens} search-token rows": tokens * token_row,
        },
    )
    pay = Floor(
        "RecordPayment",
        {
            "verify the command (Ed25519)": verify,
            "sign 3 records (outcome, PaymentRecorded, StatusChanged)": 3 * sign,
            "4 rows (receipt, event, booking, history)": 4 * row,
        },
    )
    return [place, pay]


# ------------------------------------------------------------------------------ rebuild


def rebuild(views: Path, events_file: Path, page: int = 10_000) -> Floor:
    """The floor per event of the log in the SQLite event store `events_file`, whose read model
    the real rebuild made in `views` (see the module docstring)."""
    store = sqlite3.connect(f"file:{events_file}?mode=ro", uri=True)
    began = time.process_time()
    states, last = [], 0
    while True:
        got = store.execute(
            "SELECT rowid, state FROM stored_events WHERE rowid > ? ORDER BY rowid LIMIT ?", (last, page)
        ).fetchall()
        if not got:
            break
        last = got[-1][0]
        states += [state for _, state in got]
    read = time.process_time() - began
    store.close()
    events = len(states)
    gc.disable()  # as the rebuild does (`ops.rebuild._collector_paused`)
    try:
        began = time.process_time()
        parsed = [orjson.loads(s) for s in states]
        parse = time.process_time() - began
    finally:
        gc.enable()
    personal = sum(bytes(s).count(b'"_type_":"personal"') for s in states)
    del parsed, states

    key, subject = os.urandom(32), uuid.uuid4()
    sealed = encrypt(key, subject, "guest-123456@example.com")
    opening = cpu_us(lambda: decrypt(key, subject, sealed))
    sealing = cpu_us(lambda: encrypt(key, subject, "guest-123456@example.com"))
    mac = cpu_us(lambda: hmac.digest(key, b"prefix\0guest-1", "sha256"))

    source = sqlite3.connect(f"file:{views}?mode=ro", uri=True)
    tables = [
        (name, sql)
        for name, sql in source.execute("SELECT name, sql FROM sqlite_master WHERE type='table'")
        if not name.startswith(("sqlite_", "rebuild_")) and sql
    ]
    indexes = [
        sql
        for (sql,) in source.execute("SELECT sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL")
    ]
    contents = {name: source.execute(f'SELECT * FROM "{name}"').fetchall() for name, _ in tables}  # noqa: S608 (our own names)
    distinct_tokens = sum(
        source.execute(f'SELECT count(DISTINCT token) FROM "{name}"').fetchone()[0]  # noqa: S608 (our own names)
        for name, _ in tables
        if "token" in [c[1] for c in source.execute(f'PRAGMA table_info("{name}")')]
        and name.endswith("tokens")
    )
    sealed_values = 0
    for name, _ in tables:
        columns = [c[1] for c in source.execute(f'PRAGMA table_info("{name}")')]
        for column in (c for c in columns if c.endswith("_sealed")):
            sealed_values += source.execute(f'SELECT count("{column}") FROM "{name}"').fetchone()[0]  # noqa: S608 (our own names)
    source.close()

    with tempfile.TemporaryDirectory(prefix="floor-") as tmp:
        target = sqlite3.connect(Path(tmp) / "views.sqlite3", isolation_level=None)
        target.execute("PRAGMA journal_mode=OFF")
        target.execute("PRAGMA synchronous=OFF")
        for _, sql in tables:
            target.execute(sql)
        began = time.process_time()
        target.execute("BEGIN")
        for name, rows in contents.items():
            if rows:
                marks = ",".join("?" * len(rows[0]))
                for start in range(0, len(rows), page):
                    target.executemany(f'INSERT INTO "{name}" VALUES ({marks})', rows[start : start + page])  # noqa: S608 (our own names)
        target.execute("COMMIT")
        write = time.process_time() - began
        began = time.process_time()
        for sql in indexes:
            target.execute(sql)
        index = time.process_time() - began
        target.close()
    rows = sum(len(r) for r in contents.values())
    per = 1e6 / max(events, 1)
    return Floor(
        "rebuilt event",
        {
            "read the stored events": read * per,
            "parse them (orjson)": parse * per,
            f"open {personal / max(events, 1):.1f} personal values (AES-GCM)": personal
            * opening
            / max(events, 1),
            f"{distinct_tokens / max(events, 1):.1f} keyed hashes (distinct tokens)": distinct_tokens
            * mac
            / max(events, 1),
            f"{sealed_values / max(events, 1):.1f} sealed columns (AES-GCM)": sealed_values
            * sealing
            / max(events, 1),
            f"write {rows / max(events, 1):.1f} rows, in order": write * per,
            "make the indexes": index * per,
        },
        {
            "events": events,
            "personal_values": personal,
            "distinct_tokens": distinct_tokens,
            "sealed_values": sealed_values,
            "rows": rows,
        },
    )


# ------------------------------------------------------------------------------ printing


def lines(floor: Floor, pipe_rate: float | None = None) -> list[str]:
    head = f"floor, {floor.what}: {floor.us:.0f} µs of CPU -> at most {floor.per_second:,.0f}/s on one core"
    if pipe_rate:
        head += f" ({floor.per_second / pipe_rate:.0%} of a {pipe_rate:,.0f} msg/s pipe)"
    return [head] + [f"    {what}: {us:.1f} µs" for what, us in floor.parts.items()]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pipe", type=float, help="a raw pipe's msg/s, to print the bound as a ratio of it")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    floors = commands()
    if args.json:
        print(
            json.dumps(
                [{"what": f.what, "us": f.us, "per_second": f.per_second, "parts": f.parts} for f in floors]
            )
        )
        return
    for floor in floors:
        print("\n".join(lines(floor, args.pipe)))


if __name__ == "__main__":
    main()
