"""The whole pipeline side by side with what Kafka and the store allow: one command, one table.

    python -m benchmarks.pipeline            # from the repository root
    python -m benchmarks.pipeline --quick    # under 3 minutes
    python -m benchmarks.pipeline --json     # machine-readable figures on stdout

It starts the local Kafka broker of `deploy.local` unless KAFKA_BOOTSTRAP_SERVERS names one,
then measures, in one run on that broker:

* pipe:        a raw aiokafka consume -> produce copy (manual offsets, idempotent producer,
               acks=all), the ceiling any consumer of ours can reach on this broker and machine;
* end to end:  documented commands (PlaceBooking v2, then a RecordPayment for each booking)
               published to `bookings.commands` by an outside producer (a registered command
               publisher, each command signed with its key, as bookings requires), applied by
               the real bookings service (its own OS process, on SQLite and then on PostgreSQL
               started by `deploy.local` unless POSTGRES_HOST names one), until every command's
               `CommandOutcome` is on `bookings.command-outcomes`; printed with its ratio to
               the pipe, and the service process's CPU time per command (a figure that a
               machine busy with other work does not distort as it does rates). Every outcome
               must be "accepted": a run whose commands were refused measures nothing;
* floor:       the least CPU the design needs per PlaceBooking, per RecordPayment and per
               rebuilt event, whatever the code around it (benchmarks.floor: each signature,
               seal, keyed hash and row done directly by its library), so the highest rate one
               process can reach on this machine, with its ratio to the pipe; the rebuild's
               floor is measured on the log and read model of the 100k rebuild (--quick: 10k);
* rebuild:     the bookings read model rebuilt from 10k, 100k and 1M events (--quick: 2k and
               10k) by `ops.rebuild` (shadow + switch), on each store of --stores (PostgreSQL: a
               local throw-away server unless POSTGRES_HOST names one), with the CPU time per
               event and the ratio of the rate at the largest log to the rate at the smallest
               (1.0: linear); then the seconds from starting the bookings service on the
               largest log to its `/ready`.

Both the pipe and the service are measured the same way: started and joined first, then the
producer sends every message as fast as it can, and the clock stops when the last output is
read back. Prints figures; asserts nothing about speed.

Then, on the same broker, the figures of the services' own benchmarks, called here (see
`services_parts`): `latency` (benchmarks.latency: cancel -> email at the SMTP server, p50/p90/
p99 at 50 cancellations/s, and the HTTP confirm), `notifier` (benchmarks.notifier_sender:
emails/s and notifier CPU per email, beside a bare SMTP client's), `soak` (benchmarks.soak:
each service's RSS at its start and end, under the soak's mixed load).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import chain
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from backbone import bus
from contracts.topics import BOOKINGS_COMMAND_OUTCOMES, BOOKINGS_COMMANDS
from deploy.local.kafka import LocalKafka
from deploy.local.postgres import LocalPostgres, PostgresParams
from ops import registry
from ops.rebuild import Rebuild

TENANT = "bench"


@dataclass
class Row:
    what: str
    count: int
    seconds: float
    unit: str = "msg/s"
    ratio: float | None = None  # to the raw pipe
    cpu_ms: float | None = None  # CPU of the service process per command (load-independent)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


# ------------------------------------------------------------------------------ the broker


@contextlib.contextmanager
def postgresql(wanted: bool) -> Iterator[PostgresParams | None]:
    """The PostgreSQL server named by POSTGRES_HOST (+ _PORT, _USER, _PASSWORD), or one of
    `deploy.local` started for the run (synchronous_commit on, fsync on)."""
    if not wanted:
        yield None
    elif os.environ.get("POSTGRES_HOST"):
        yield PostgresParams(
            os.environ["POSTGRES_HOST"],
            int(os.environ.get("POSTGRES_PORT", "5432")),
            os.environ.get("POSTGRES_USER", "postgres"),
            os.environ.get("POSTGRES_PASSWORD", ""),
        )
    else:
        server = LocalPostgres()
        try:
            yield server.start()
        finally:
            server.close()


@contextlib.contextmanager
def kafka() -> Iterator[str]:
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if servers:
        yield servers
        return
    broker = LocalKafka()
    try:
        yield broker.start()
    finally:
        broker.close()


def _producer(servers: str) -> AIOKafkaProducer:
    # As an outside publisher would: idempotent (acks=all), batching for a burst.
    return AIOKafkaProducer(
        bootstrap_servers=servers,
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
    )


async def _send(
    servers: str, topic: str, records: list[tuple[bytes, bytes]] | list[tuple[bytes, bytes, dict[str, str]]]
) -> None:
    producer = _producer(servers)
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic,
                r[1],
                key=r[0],
                headers=[(k, v.encode()) for k, v in (r[2] if len(r) > 2 else {}).items()],
            )
            for r in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _count(
    servers: str,
    topic: str,
    expected: int,
    ready: asyncio.Event,
    patience: float,
    outcomes: dict[str, int] | None = None,
) -> float:
    """Read `topic` from its end (as of `ready`) until `expected` more records arrived; returns
    the monotonic time the last one was read. With `outcomes`, each record is a command's
    outcome, counted there by its `outcome`."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=servers,
        group_id=f"bench-reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="latest",
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        await consumer.seek_to_end()
        for tp in consumer.assignment():  # resolve the end now, before anything is sent
            await consumer.position(tp)
        ready.set()
        seen, deadline = 0, time.monotonic() + patience
        while seen < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: {seen} of {expected} records after {patience:.0f} s")
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            seen += sum(len(records) for records in batches.values())
            if outcomes is not None:
                for record in chain.from_iterable(batches.values()):
                    outcome = orjson.loads(record.value).get("outcome", "?")
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
        return time.monotonic()
    finally:
        await consumer.stop()


# ------------------------------------------------------------------------------ the raw pipe


async def pipe(servers: str, count: int, partitions: int) -> Row:
    """consume -> produce, as bare as a correct consumer can be: manual offset commits after
    the copies are acknowledged, idempotent producer (acks=all)."""
    source, target = f"bench-pipe-in-{uuid.uuid4().hex[:8]}", f"bench-pipe-out-{uuid.uuid4().hex[:8]}"
    await bus.ensure_topics(servers, [source, target], partitions)
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=servers,
        group_id=f"{source}-pipe",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
    )
    producer = _producer(servers)
    await consumer.start()
    await producer.start()
    copied = 0

    async def copy() -> None:
        nonlocal copied
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=500)
            futures = [
                await producer.send(target, r.value, key=r.key)
                for records in batches.values()
                for r in records
            ]
            await asyncio.gather(*futures)
            if batches:
                await consumer.commit()
            copied += len(futures)

    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        task = asyncio.create_task(copy())
        ready = asyncio.Event()
        reader = asyncio.create_task(_count(servers, target, count, ready, patience=300))
        await ready.wait()
        body = json.dumps(_place(uuid.uuid4(), datetime.now(UTC))).encode()
        began = time.monotonic()
        await _send(servers, source, [(str(i).encode(), body) for i in range(count)])
        ended = await reader
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return Row("raw aiokafka pipe (consume -> produce)", count, ended - began)
    finally:
        await producer.stop()
        await consumer.stop()


# ------------------------------------------------------------------------------ end to end


def _place(booking_id: uuid.UUID, starts: datetime) -> dict[str, Any]:
    from tests.support.bookings import place

    return place(TENANT, f"guest-{booking_id.hex[:6]}@example.com", booking_id=booking_id, starts_at=starts)


def _pay(booking_id: uuid.UUID) -> dict[str, Any]:
    from tests.support.bookings import pay

    return pay(TENANT, booking_id, "30.00")


STORES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


async def end_to_end(
    servers: str, count: int, root: Path, store: str = "sqlite", postgres: PostgresParams | None = None
) -> list[Row]:
    """PlaceBooking then RecordPayment commands through the real bookings service (an OS
    process on a SQLite or PostgreSQL store), from the first send to the last outcome read
    back. The commands are signed by a registered publisher, as bookings requires: refused
    ones (unsigned, say) would be answered too, and much faster, so any outcome but
    "accepted" fails the run."""
    from tests.support.system import System, command_record

    system = System(root, servers, smtp_port=1, store=store, postgres=postgres)
    system.start("bookings")
    rows = []
    try:
        outcomes = system.topic(BOOKINGS_COMMAND_OUTCOMES)
        commands = system.topic(BOOKINGS_COMMANDS)
        starts = datetime.now(UTC) + timedelta(days=30)
        ids = [uuid.uuid4() for _ in range(count)]
        for label, bodies in (
            ("PlaceBooking", [_place(i, starts) for i in ids]),
            ("RecordPayment", [_pay(i) for i in ids]),
        ):
            records = [command_record(body) for body in bodies]  # signed before the clock starts
            ready, tally = asyncio.Event(), {}
            reader = asyncio.create_task(
                _count(servers, outcomes, count, ready, patience=900, outcomes=tally)
            )
            await ready.wait()
            cpu = _cpu_seconds(system.bookings.proc.pid)
            began = time.monotonic()
            await _send(servers, commands, records)
            ended = await reader
            row = Row(f"end to end, {STORES[store]}: {label}", count, ended - began, "commands/s")
            row.cpu_ms = (_cpu_seconds(system.bookings.proc.pid) - cpu) * 1000 / count
            if tally != {"accepted": count}:
                raise RuntimeError(f"{row.what}: outcomes {tally}, not {count} accepted; see {root}")
            rows.append(row)
        if system.bookings.errors():
            print("\n".join(system.bookings.errors()[:5]), file=sys.stderr)
    finally:
        system.stop()
    return rows


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------ rebuild


def rebuild(
    servers: str,
    store: str,
    sizes: list[int],
    root: Path,
    postgres: Any,
    report: Any = print,
    floor_at: int | None = None,
) -> list[Row]:
    """The bookings read model rebuilt from each number of events in `sizes` (one booking
    written by the service's own handler, the rest copies of its events: `_write_copies`), on
    `store` ("sqlite" or "postgres"); then the ratio of the rate
    at the largest to the rate at the smallest (1.0: linear), and how long the service takes,
    with that largest log, from its start to ready (serving HTTP, its consumers joined).

    The rebuild runs in a process state of its own (the store opened afresh), as an
    operator's `booking-accounts rebuild` does: nothing it reads is still in memory. Its CPU
    time per event (this process's, which does nothing else meanwhile) is printed beside the
    rate: a machine busy with other work slows the rate, much less the CPU time.

    With `floor_at` (SQLite), the log of that size and the read model its rebuild made are
    measured again by `benchmarks.floor.rebuild`: the least CPU per event the design needs."""
    rows: list[Row] = []
    measured: list[Row] = []
    label = {"sqlite": "SQLite", "postgres": "PostgreSQL"}[store]
    for n, events in enumerate(sizes):
        setup, row = _rebuild_one(servers, store, label, events, root / f"rebuild-{store}-{n}", postgres)
        rows.append(row)
        measured.append(row)
        report(_rebuild_line(row), flush=True)
        if store == "sqlite" and events == floor_at:
            rows.append(_rebuild_floor(setup, events, row, report))
    if len(measured) > 1:
        ratio = Row(f"rebuild, {label}: rate {sizes[-1]:,} / {sizes[0]:,}", sizes[-1], 0.0, "ratio")
        ratio.ratio = measured[-1].rate / measured[0].rate if measured[0].rate else None
        rows.append(ratio)
        report(_rebuild_line(ratio), flush=True)
    ready = _ready(setup, label, sizes[-1])
    rows.append(ready)
    report(_rebuild_line(ready), flush=True)
    return rows


def _rebuild_floor(setup: Any, events: int, measured: Row, report: Any) -> Row:
    from benchmarks import floor

    data_dir = Path(setup.services["bookings"]["DATA_DIR"])
    least = floor.rebuild(data_dir / "bookings-views.sqlite3", data_dir / "bookings-events.sqlite3")
    row = Figure(
        f"  floor: rebuild, {events:,} events",
        events,
        events * least.us / 1e6,
        "events/s",
        cpu_ms=least.us / 1000,
        text=f"{least.per_second:,.0f} events/s",
        value=least.per_second,
        figures={"parts_us": least.parts, "measured_us": (measured.cpu_ms or 0) * 1000},
    )
    report(_rebuild_line(row), flush=True)
    for line in floor.lines(least)[1:]:
        report(f"|{line}", flush=True)
    return row


def _rebuild_line(row: Row) -> str:
    """`_line`, with a ratio or a start-up time in the rate's place, and CPU per event."""
    if row.unit == "ratio":
        rate = f"{row.ratio or 0:>9.2f} {'(linear: 1)':<10}"
    elif row.unit == "s to ready":
        rate = f"{row.seconds:>9.2f} {'s to ready':<10}"
    else:
        rate = f"{row.rate:>9,.0f} {row.unit:<10}"
    cpu = f"{row.cpu_ms * 1000:5.0f} µs/ev" if row.cpu_ms is not None else ""
    return f"| {row.what:<40} | {row.count:>9,} | {row.seconds:7.2f} s | {rate} | {'':>6} | {cpu:>9} |"


def _rebuild_one(
    servers: str, store: str, label: str, events: int, root: Path, postgres: Any
) -> tuple[Any, Row]:
    from benchmarks.ops import deployment, open_service, write

    root.mkdir(parents=True, exist_ok=True)
    setup = deployment(store, root, servers, postgres)
    writer = open_service("bookings", setup)
    try:
        write(writer, 2)  # one booking placed and cancelled by the service's own handler...
        _write_copies(writer, events - 2)  # ... and copies of its events for the rest
    finally:
        writer.close()
    bookings = registry.build("bookings", setup)
    try:
        [(read_model, projections)] = bookings.read_models
        job = Rebuild(bookings.app, read_model, projections)
        cpu, began = time.process_time(), time.perf_counter()
        applied = job.run().applied
        row = Row(f"rebuild, {label}, {events:,} events", applied, time.perf_counter() - began, "events/s")
        row.cpu_ms = (time.process_time() - cpu) * 1000 / max(applied, 1)
        _as_if_running(bookings)
    finally:
        bookings.close()
    return setup, row


def _write_copies(handle: Any, events: int, chunk: int = 1_000) -> None:
    """`events` more events for the store: copies of the first booking's (placed, then
    cancelled, as `benchmarks.ops.write` made them through the service's own handler) for new
    bookings, each with its own id, code and customer (sealed with its own key), turned into
    stored events by the application's own mapper and written a chunk at a time straight
    through its recorder. Setup, not what is measured: the save path (a command handler, a
    unit of work and a transaction per booking) would take a quarter of an hour for 1M events.
    Chunks of 1,000 bookings: with 5,000 (10,000 events in one pipeline of psycopg) the write
    to PostgreSQL never returned."""
    import dataclasses

    from backbone.follower import read_log
    from backbone.personal import Personal

    placed, cancelled = (r.event for r in read_log(handle.app, 0, 2))
    app = handle.app
    for first in range(1, events // 2 + 1, chunk):
        numbers = range(first, min(first + chunk, events // 2 + 1))
        ids = [uuid.uuid4() for _ in numbers]
        app.vault.create_keys(ids)  # one transaction per chunk
        made = []
        for n, booking_id in zip(numbers, ids, strict=True):
            now = datetime.now(UTC)
            customer = {
                "email": Personal(booking_id, f"guest-{n}@example.com"),
                "name": Personal(booking_id, f"Guest {n}"),
                "phone": None,
            }
            meta = {**placed.meta, "correlation_id": str(uuid.uuid4()), "causation_id": str(uuid.uuid4())}
            made.append(
                dataclasses.replace(
                    placed,
                    originator_id=booking_id,
                    code=f"B-{n}",
                    customer=customer,
                    timestamp=now,
                    meta=meta,
                )
            )
            made.append(
                dataclasses.replace(
                    cancelled, originator_id=booking_id, timestamp=now, cancelled_at=now, meta=meta
                )
            )
        app.recorder.insert_events([app.mapper.to_stored_event(e) for e in made])


def _as_if_running(bookings: Any) -> None:
    """Leave the store as a running service would have it: every event relayed and looked at
    by the eraser, every subject key published (the setup wrote them with none of the
    service's followers running). The projection is at the head already: the rebuild
    switched it there."""
    import sqlalchemy as sa

    from backbone.eventstore import Tracking
    from backbone.personal import subject_keys

    for follower in bookings.service.followers:
        if follower not in bookings.projections:
            bookings.app.record_position(Tracking(follower.name, bookings.app.head()))
    with bookings.app.vault.engine.begin() as conn:
        conn.execute(sa.update(subject_keys).values(published=True))


def _ready(setup: Any, label: str, events: int) -> Row:
    """Seconds from starting the bookings service (its own OS process) on a store of `events`
    events to its `/ready` answering 200; and that its projection did not start over."""
    import httpx

    from deploy.local._proc import free_ports, spawn, terminate_group

    [port] = free_ports(1)
    env = {
        **os.environ,
        **setup.common,
        **setup.services["bookings"],
        "HTTP_PORT": str(port),
        "LOG_FORMAT": "json",
    }
    log = Path(setup.services["bookings"]["DATA_DIR"]) / "service.log"
    began = time.monotonic()
    proc = spawn([sys.executable, "-m", "services.bookings"], log_file=log, env=env, cwd=Path.cwd(), grace=10)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"bookings exited while starting:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.05)
        seconds = time.monotonic() - began
    finally:
        terminate_group(proc, timeout=20)
    started = [json.loads(line) for line in log.read_text().splitlines() if '"follower started"' in line]
    replayed = sorted(line["follower"] for line in started if not line.get("position"))
    what = f"ready, {label}, {events:,} events" + (f" (from 0: {', '.join(replayed)})" if replayed else "")
    return Row(what, events, seconds, "s to ready")


# ------------------------------------------------------------------------------ main


async def measure(
    args: argparse.Namespace, servers: str, root: Path, postgres: PostgresParams | None = None
) -> list[Row]:
    rows: list[Row] = []
    report = print if not args.json else (lambda *a, **k: print(*a, **k, file=sys.stderr))
    parts = args.parts.split(",")
    raw = None
    if "pipe" in parts:
        raw = await pipe(servers, args.pipe, partitions=3)
        rows.append(raw)
        report(_line(raw), flush=True)
    for store in args.stores.split(",") if "e2e" in parts else ():
        for row in await end_to_end(servers, args.commands, root / f"e2e-{store}", store, postgres):
            row.ratio = row.rate / raw.rate if raw else None
            rows.append(row)
            report(_line(row), flush=True)
    floor_at = None  # the rebuild's floor: on the 100k log (--quick: the largest, 10k)
    if "floor" in parts:
        rows += _command_floors(raw, report)
        floor_at = args.rebuild[-2] if len(args.rebuild) > 2 else args.rebuild[-1]
    for store in args.stores.split(",") if "rebuild" in parts else ():
        rows += await asyncio.to_thread(
            rebuild, servers, store, args.rebuild, root, postgres, report, floor_at
        )
    rows += await services_parts(parts, args.quick, servers, root, report)
    return rows


def _command_floors(raw: Row | None, report: Any) -> list[Row]:
    """`benchmarks.floor.commands`: the least CPU per command the design needs, so the highest
    rate (and ratio to the pipe) one bookings process could reach on this machine."""
    from benchmarks import floor

    rows: list[Row] = []
    for least in floor.commands():
        row = Row(f"  floor: {least.what}, one core", 1000, least.us / 1000, "commands/s")
        row.cpu_ms = least.us / 1000
        row.ratio = row.rate / raw.rate if raw else None
        rows.append(row)
        report(_line(row), flush=True)
        for line in floor.lines(least)[1:]:
            report(f"|{line}", flush=True)
    return rows


def _line(row: Row) -> str:
    ratio = f"{row.ratio:6.1%}" if row.ratio is not None else ""
    rate = f"{row.rate:>9,.0f} {row.unit:<10}"
    cpu = f"{row.cpu_ms:6.2f} ms" if row.cpu_ms is not None else ""
    return f"| {row.what:<40} | {row.count:>9,} | {row.seconds:7.2f} s | {rate} | {ratio:>6} | {cpu:>9} |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller runs, under 3 minutes")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated: {', '.join(PARTS)}")
    parser.add_argument("--commands", type=int, help="commands of each kind end to end")
    parser.add_argument(
        "--stores", default="sqlite,postgres", help="end to end and rebuilds on: sqlite, postgres"
    )
    args = parser.parse_args()
    args.pipe = 20_000 if args.quick else 100_000
    args.commands = args.commands or (2_000 if args.quick else 10_000)
    args.rebuild = [2_000, 10_000] if args.quick else [10_000, 100_000, 1_000_000]
    if args.json:
        _logs_to_stderr()
    when = datetime.now(UTC)
    machine = (
        f"{platform.node()}: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"
    )
    if not args.json:
        print(f"# booking-accounts pipeline benchmark, {when:%Y-%m-%d %H:%M} UTC, {machine}")
        print(f"| {'what':<40} | {'count':>9} | {'time':>9} | {'rate':>20} | {'/pipe':>6} | {'CPU/cmd':>9} |")
        print(f"|{'-' * 42}|{'-' * 11}|{'-' * 11}|{'-' * 22}|{'-' * 8}|{'-' * 11}|")
    with (
        kafka() as servers,
        postgresql("postgres" in args.stores.split(",")) as postgres,
        tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp,
    ):
        rows = asyncio.run(measure(args, servers, Path(tmp), postgres))
    if args.json:
        print(
            json.dumps(
                {
                    "when": when.isoformat(),
                    "machine": machine,
                    "quick": args.quick,
                    "rows": [
                        {
                            "what": r.what,
                            "count": r.count,
                            "seconds": round(r.seconds, 3),
                            "rate": round(r.rate, 1),
                            "unit": r.unit,
                            "ratio_to_pipe": round(r.ratio, 4) if r.ratio is not None else None,
                            "service_cpu_ms_per_command": round(r.cpu_ms, 3)
                            if r.cpu_ms is not None
                            else None,
                            **({"figures": r.figures} if isinstance(r, Figure) else {}),
                        }
                        for r in rows
                    ],
                },
                indent=2,
            )
        )


# ------------------------------------------------------------------------------ latency, notifier, soak

PARTS = ("pipe", "e2e", "floor", "rebuild", "latency", "notifier", "soak")
LATENCY_RATE = 50.0  # cancellations offered per second (issue 10: p99 at that rate)


@dataclass
class Figure(Row):
    """A row whose figure is not a rate: `text` is shown in the rate column, `value` is the
    JSON's `rate` (None: count / seconds), `figures` go to the JSON as they are."""

    text: str = ""
    value: float | None = None
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.value if self.value is not None else Row.rate.fget(self)  # type: ignore[attr-defined]


async def services_parts(parts: list[str], quick: bool, servers: str, root: Path, report: Any) -> list[Row]:
    """The parts measured by the services' own benchmarks, called here on this run's broker:
    `latency` (benchmarks.latency: cancel -> email at LATENCY_RATE/s, bookings and notifier
    processes), `notifier` (benchmarks.notifier_sender: the sender's emails/s and CPU per
    email, against a bare SMTP client), `soak` (benchmarks.soak: the three services' RSS
    under a steady mixed load, its caches filled first; --quick: 20 s measured, none filled,
    which shows a leak only if it is fast)."""
    rows: list[Row] = []
    for part, measure_part in (("latency", _latency), ("notifier", _notifier), ("soak", _soak)):
        if part in parts:
            for row in await measure_part(quick, servers, root / part):
                rows.append(row)
                report(_figure_line(row) if isinstance(row, Figure) else _line(row), flush=True)
    return rows


async def _latency(quick: bool, servers: str, root: Path) -> list[Row]:
    from benchmarks import latency

    args = argparse.Namespace(
        rate=LATENCY_RATE, duration=10.0 if quick else 60.0, warmup=20, per_customer=20, profile=None
    )
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    result = await asyncio.to_thread(latency.run, args, servers, root)
    cpu = sum(result["cpu_ms_per_cancel"].values())
    rows = []
    for what, key in (
        ("cancel -> email, ms p50/90/99", "confirm_to_email_ms"),
        ("  HTTP confirm, ms p50/90/99", "http_confirm_ms"),
    ):
        s = result[key]
        rows.append(
            Figure(
                f"{what}, {args.rate:g}/s" if key == "confirm_to_email_ms" else what,
                s["n"],
                args.duration,
                "ms p50/90/99",
                cpu_ms=cpu if key == "confirm_to_email_ms" else None,
                text=f"{s['p50']:.0f} / {s['p90']:.0f} / {s['p99']:.0f}",
                value=s["p99"],
                figures={**s, **({"run": result} if key == "confirm_to_email_ms" else {})},
            )
        )
    return rows


async def _notifier(quick: bool, servers: str, root: Path) -> list[Row]:
    from benchmarks import notifier_sender

    _logs_to_stderr()  # (the sender runs in this process: the table goes to stdout alone)
    emails, connections = (1_000 if quick else 3_000), 4
    rate, cpu, (received, copies), pipe_rate, pipe_cpu = await notifier_sender.run(emails, 100, connections)
    smtp = Row(f"  SMTP: bare aiosmtplib, {connections} conns", emails, emails / pipe_rate, "emails/s")
    smtp.cpu_ms = pipe_cpu * 1000 / emails
    if received != emails or copies:
        raise RuntimeError(f"notifier: {received} of {emails} emails received, {copies} twice")
    figures = {"smtp_pipe_rate": round(pipe_rate, 1), "ratio_to_smtp_pipe": round(rate / pipe_rate, 3)}
    what = f"notifier: emails sent, {connections} SMTP conns"
    text = f"{rate:,.0f}/s, {rate / pipe_rate:.0%} of SMTP"
    sender = Figure(what, emails, emails / rate, "emails/s", text=text, figures=figures)
    sender.cpu_ms = cpu * 1000 / emails
    return [sender, smtp]


async def _soak(quick: bool, servers: str, root: Path) -> list[Row]:
    from benchmarks import soak

    quick_args = ["--duration", "20", "--warmup", "5", "--customers", "8", "--patience", "30"]
    quick_args += ["--find-max-seconds", "2"]  # (the maxima are measured first, each path alone)
    # In full: the caches filled first (bounded by entries, they would fill during the soak:
    # growth to a bound, not a leak), then 2 minutes for the followers to catch up.
    args = soak.arguments(quick_args if quick else ["--fill", "20000", "--warmup", "120"])
    result = await asyncio.to_thread(soak.run_on, args, servers)
    rows: list[Row] = []
    for name, s in result["rss"].items():
        anon = result["rss_kinds"][name].get("anon", {})
        rows.append(
            Figure(
                f"soak: RSS of {name}",
                s["samples"],
                result["measured_seconds"],
                "% RSS, end vs start",
                text=f"{s['start_mb']:.0f} -> {s['end_mb']:.0f} MB {s['change_pct']:+.0f}%",
                value=s["change_pct"],
                figures={
                    **{k: v for k, v in s.items() if k != "samples_mb"},
                    "anon": anon,
                    "load_average": result["load_average"],
                    "rates_achieved": result["rates_achieved"],
                },
            )
        )
    return rows


def _logs_to_stderr() -> None:
    """The log lines of what runs in this process (the local Kafka's and PostgreSQL's starts,
    the notifier's sender) go to stderr: with --json, stdout is the JSON alone."""
    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))


def _figure_line(row: Figure) -> str:
    cpu = f"{row.cpu_ms:6.2f} ms" if row.cpu_ms is not None else ""
    ratio = f"{row.ratio:6.1%}" if row.ratio is not None else ""
    head = f"| {row.what:<40} | {row.count:>9,} | {row.seconds:7.2f} s"
    return f"{head} | {row.text:>20} | {ratio:>6} | {cpu:>9} |"


if __name__ == "__main__":
    main()
