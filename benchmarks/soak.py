"""Memory over a soak: does each service's resident memory stay flat under a steady mixed load?

    python -m benchmarks.soak                     # maxima measured, then 10 minutes at half of them
    python -m benchmarks.soak --quick             # 60 s measured (each maximum measured for 2 s)
    python -m benchmarks.soak --fill 20000        # the services' caches filled first (docs/performance.md)
    python -m benchmarks.soak --recorded-maxima   # at half of the maxima written down on 2026-11-30
    python -m benchmarks.soak --store postgres    # the stores on PostgreSQL
    python -m benchmarks.soak --json

The accounts, bookings and notifier services run as in production, each its own OS process
(`python -m services.<name>`), on a real Kafka broker (the local one of `deploy.local` unless
KAFKA_BOOTSTRAP_SERVERS names one), with the mail catcher of `deploy.local` in its own process
as the SMTP server, and SQLite stores (or deploy.local's PostgreSQL, or POSTGRES_HOST's).
Nothing is played: customers claim accounts over HTTP, follow the link of the email that
reaches the mail catcher, choose a password and log in; their sessions are the ones accounts
issues. The per-client rate limits are raised as the integration tests raise them
(`RATE_LIMITS`, see tests/support/system.py): every customer here is 127.0.0.1. Every claim
uses an address of its own, so the per-address limits are never reached.

The load is open (each action starts when it is due, whatever became of the earlier ones;
up to `--inflight` per path wait at once, beyond that an action is counted as skipped):
- PlaceBooking and RecordPayment commands, signed by a registered publisher, on
  `bookings.commands` (bookings for the customers' accounts, cancellable);
- customers cancelling bookings over HTTP (quote, then confirm; the notifier emails the customer
  and the business's staff);
- customers reading their bookings (the list, one booking, in turn);
- claims of new accounts (a verification email each), the verification through the emailed
  link (a welcome email) and the login that follows, and logins of known customers.

Rates: each path alone at its maximum takes the machine (the services share its two cores),
so the six paths together run at half of each one's maximum divided by six (`mixed_rates`):
the machine about half used in all. The maxima are measured in the same run, on the same
services, after the fill and before the warm-up (`find_max`: each path alone, flat out, for
`--find-max-seconds`), so that "half" is half of what this machine and this code do today,
under whatever else the machine runs then (the load average is printed with them);
`--recorded-maxima` uses those written down on 2026-11-30 instead (`MAXIMA`: they were 15
to 40 times what the customers' reads over HTTP achieve after a fill, which saturated
bookings); `--scale` chooses the fraction (0.5), `--<path>-rate` sets one rate.

What counts as done: a PlaceBooking when its outcome arrives on `bookings.command-outcomes`
(its latency is until then); a booking is read or cancelled only once its PlaceBooking was
answered, a customer reads only once accounts verified them. The read model may show either a
moment later (the projection's delay; an account reaches bookings through accounts' events),
so a 404 or a 403 `not_verified` then is counted as "not yet shown" and looked at again until
it is (the delay is printed), and as a failure only if it still is not a minute later. Every
other answer than 200/202 is a failure, counted by status and the problem's `code`.

After `--warmup` seconds of that load, each service's resident set (VmRSS of its process and
any children, /proc) is sampled every `--interval` seconds for `--duration` seconds. Printed per
service: RSS at the start of the measurement, at its end, min, max, end against start in %, a
least-squares slope in MB/min, and whether every sample stayed within ±10 % of the first. Also
the rates offered and achieved per path and the work done (commands answered, emails received
by kind), so that a soak that did nothing cannot look flat, and the load average (the machine
is shared). Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import json
import os
import random
import re
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from benchmarks.latency import mail_server
from benchmarks.reads import cpu_seconds, infrastructure, percentile
from services.bookings.reads import SUMMARIES
from tests.support.bookings import pay, place, record
from tests.support.system import (
    REPO,
    TEST_PUBLISHERS,
    System,
    notifier_staff_headers,
    publisher,
    set_tenant_settings,
)

TENANT = "bench-soak"
PASSWORD = "kayak-at-dawn-on-a-still-lake"  # noqa: S105 - the customers' password, a test value
TOLERANCE = 0.10  # the goal: RSS within ±10 %
# A booking is read or cancelled once its PlaceBooking was answered (the outcome is published
# after the booking is stored), a customer reads once verified. The read model may show either a
# little later (the projection's delay; the account reaches bookings through accounts' events):
# a 404 or "not_verified" 403 then is looked at again every RECHECK seconds, and counted as a
# failure only if still so LATE_PATIENCE seconds after the write was confirmed.
RECHECK = 1.0
LATE_PATIENCE = 60.0

# Each path's maximum on the 2-core development VM, as measured under other work
# (2026-11-30); the soak runs at `--scale` (half) of them unless `--find-max` measures them.
MAXIMA: dict[str, tuple[float, str]] = {
    "place": (40.0, "2026-11-30, loaded VM: PlaceBooking end to end, 40/s"),
    "pay": (12.0, "2026-11-30, loaded VM: RecordPayment end to end, 12/s"),
    "cancel": (20.0, "2026-11-30, loaded VM: cancel -> email sustained at 20/s, not at 50/s"),
    "read": (800.0, "2026-11-30, loaded VM: customers' reads, SQLite, 800 requests/s"),
    # Not measured as a rate: argon2id (RFC 9106 low-memory: 64 MiB, 3 passes, 4 lanes) costs 0.3 s
    # of CPU per hash on that VM, so its two cores hash about 6 passwords a second; a login is
    # one hash, a claim followed through (verified with a password, then a login) two or more.
    "claim": (2.0, "estimate: 2+ argon2id hashes per claim followed through, 0.3 s CPU each, 2 cores"),
    "login": (6.0, "estimate: one argon2id hash per login, 0.3 s CPU each, 2 cores"),
}
PATHS = tuple(MAXIMA)


# ------------------------------------------------------------------------------ pure helpers


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) samples, in value per minute (0 for < 2 samples)."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in samples) / spread * 60


def mixed_rates(maxima: dict[str, float], scale: float) -> dict[str, float]:
    """The rate of each path when all run at once: each path alone at its maximum takes the
    machine (the services share its cores), so n paths together at max / n each take it too,
    and `scale` of that (a half) leaves the machine half used. Rounded to 0.1/s, at least 0.1/s
    for a path with a maximum."""
    share = scale / max(1, len(maxima))
    return {path: max(0.1, round(value * share, 1)) if value > 0 else 0.0 for path, value in maxima.items()}


def rss_summary(samples: list[tuple[float, float]], tolerance: float = TOLERANCE) -> dict[str, Any]:
    """RSS samples (seconds since the measurement began, bytes) summed up in MB: start, end,
    min, max, end against start in %, the least-squares slope in MB/min, whether every sample
    stayed within ±tolerance of the first (`flat`), and the lowest of the first and of the last
    fifth of the samples (`low_start_mb`, `low_end_mb`: what is left between transient peaks,
    such as a password hash's 64 MiB, which a growth would lift too) and whether that floor
    stayed within ±tolerance (`floor_flat`: the criterion for a service whose RSS swings with
    transient allocations given back after, as accounts' password hashes are)."""
    if not samples:
        return {"samples": 0, "flat": None}
    mb = [(t, v / 2**20) for t, v in samples]
    start, end = mb[0][1], mb[-1][1]
    values = [v for _, v in mb]
    fifth = max(1, len(values) // 5)
    low_start, low_end = min(values[:fifth]), min(values[-fifth:])
    return {
        "samples": len(mb),
        "seconds": round(mb[-1][0] - mb[0][0], 1),
        "start_mb": round(start, 1),
        "end_mb": round(end, 1),
        "min_mb": round(min(values), 1),
        "max_mb": round(max(values), 1),
        "change_pct": round((end - start) / start * 100, 1) if start else None,
        "slope_mb_per_min": round(slope_per_minute(mb), 3),
        "flat": bool(start) and all(abs(v - start) <= tolerance * start for v in values),
        "low_start_mb": round(low_start, 1),
        "low_end_mb": round(low_end, 1),
        "floor_flat": abs(low_end - low_start) <= tolerance * low_start,
        "samples_mb": [[round(t, 1), round(v, 1)] for t, v in mb],
    }


def memory_kinds(pid: int) -> dict[str, int]:
    """A process's resident memory by kind (Linux /proc status), in bytes: `anon` (heaps,
    malloc arenas, SQLite's page caches, Python's objects), `file` (mapped files: libraries, and
    a database file if mmapped) and `shmem`."""
    kinds = {"RssAnon:": "anon", "RssFile:": "file", "RssShmem:": "shmem"}
    found = dict.fromkeys(kinds.values(), 0)
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, *rest = line.split()
            if key in kinds:
                found[kinds[key]] = int(rest[0]) * 1024
    return found


def kinds_summary(samples: list[tuple[float, dict[str, int]]]) -> dict[str, Any]:
    """Per kind of `memory_kinds` samples: start and end in MB and the slope in MB/min."""
    if not samples:
        return {}
    return {
        kind: {
            "start_mb": round(samples[0][1][kind] / 2**20, 1),
            "end_mb": round(samples[-1][1][kind] / 2**20, 1),
            "slope_mb_per_min": round(slope_per_minute([(t, k[kind] / 2**20) for t, k in samples]), 3),
        }
        for kind in samples[0][1]
    }


def rss_bytes(pid: int) -> int:
    """VmRSS of a process and of its children, grandchildren... (Linux /proc), in bytes."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(FileNotFoundError):
                    todo += [int(c) for c in (task / "children").read_text().split()]
    return total


# ------------------------------------------------------------------------------ what grows

# `--tracemalloc`: put on the services' path as `sitecustomize` (their code is not touched), a
# thread that waits for files in a directory: `start` starts tracing allocations (from then on:
# tracing a service's start makes it several times slower), `take-<n>` writes a snapshot as
# `<n>.snapshot`.
SITECUSTOMIZE = """
import contextlib, json, os, threading, time, tracemalloc
_directory = os.environ.get("SOAK_TRACEMALLOC_DIR")
if _directory:

    def _snapshots():
        while True:
            for name in sorted(os.listdir(_directory)):
                if name == "start":
                    tracemalloc.start(int(os.environ.get("SOAK_TRACEMALLOC_FRAMES", "8")))
                    os.remove(os.path.join(_directory, name))
                if name.startswith("take-"):
                    n = name.split("-", 1)[1]
                    path = os.path.join(_directory, n + ".snapshot")
                    tracemalloc.take_snapshot().dump(path + ".part")
                    os.replace(path + ".part", path)
                    os.remove(os.path.join(_directory, name))
                if name.startswith("trim-"):  # what glibc gives back if asked (malloc_trim)
                    n = name.split("-", 1)[1]
                    path = os.path.join(_directory, n + ".trim")
                    with open(path + ".part", "w") as out:
                        json.dump(_trim(), out)
                    os.replace(path + ".part", path)
                    os.remove(os.path.join(_directory, name))
                if name.startswith("probe-"):
                    n = name.split("-", 1)[1]
                    path = os.path.join(_directory, n + ".probe")
                    with open(path + ".part", "w") as out:
                        json.dump(_probe(), out)
                    os.replace(path + ".part", path)
                    os.remove(os.path.join(_directory, name))
            time.sleep(0.5)

    def _rss():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024

    def _trim():
        import ctypes

        before, began = _rss(), time.monotonic()
        ctypes.CDLL(None).malloc_trim(0)
        return {"rss_before": before, "rss_after": _rss(), "seconds": time.monotonic() - began}

    def _probe():
        # What holds memory outside the Python objects: SQLite's own allocations (every
        # connection's page cache, statements), glibc's heap (in use, free but kept: all
        # arenas), and the largest caches (OrderedDicts) by type and size.
        import collections, ctypes, ctypes.util, gc, sys, tempfile

        found = {"threads": threading.active_count(), "python_blocks": sys.getallocatedblocks()}
        with contextlib.suppress(OSError, AttributeError):
            sqlite = ctypes.CDLL(ctypes.util.find_library("sqlite3"))
            sqlite.sqlite3_memory_used.restype = ctypes.c_int64
            sqlite.sqlite3_memory_highwater.restype = ctypes.c_int64
            found["sqlite_used"] = sqlite.sqlite3_memory_used()
            found["sqlite_highwater"] = sqlite.sqlite3_memory_highwater(0)
        with contextlib.suppress(OSError, AttributeError):

            class Mallinfo2(ctypes.Structure):
                _fields_ = [(f, ctypes.c_size_t) for f in (
                    "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                    "uordblks", "fordblks", "keepcost")]

            libc = ctypes.CDLL(None)
            libc.mallinfo2.restype = Mallinfo2
            info = libc.mallinfo2()
            found["malloc_heap"] = info.arena  # sbrk'd and arena heaps (all arenas)
            found["malloc_mmapped"] = info.hblkhd  # large blocks mmapped one by one
            found["malloc_in_use"] = info.uordblks
            found["malloc_free_kept"] = info.fordblks
        # Python's own allocator (obmalloc) takes 1 MiB arenas from mmap, outside malloc's
        # figures: its statistics go to the C stderr, borrowed for the moment.
        with tempfile.TemporaryFile("w+") as out:
            sys.stderr.flush()
            saved = os.dup(2)
            try:
                os.dup2(out.fileno(), 2)
                sys._debugmallocstats()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            out.seek(0)
            for line in out:
                if line.startswith("# arenas allocated current"):
                    found["python_arenas"] = int(line.split("=")[1].replace(",", "")) * 2**20
                elif line.startswith("# bytes in allocated blocks"):
                    found["python_in_blocks"] = int(line.split("=")[1].replace(",", ""))
        # The largest containers held in objects' attributes (caches), by owner and attribute.
        caches = collections.Counter()
        for obj in gc.get_objects():
            if isinstance(obj, type(sys)):  # modules' tables: not what grows
                continue
            try:
                attributes = object.__getattribute__(obj, "__dict__")
            except Exception:
                continue
            if not isinstance(attributes, dict):
                continue
            for attribute, value in list(attributes.items()):
                if isinstance(value, (dict, list, set, collections.deque)) and len(value) >= 200:
                    caches[f"{type(obj).__qualname__}.{attribute}"] += len(value)
        found["containers"] = dict(caches.most_common(12))
        # What the largest of them hold, in bytes: everything reachable from the container
        # that is not a module, class or function (what two containers share counts in both),
        # estimated from SAMPLE of its entries times its length. Walking every entry took
        # minutes once the read caches were full, holding the GIL and a set of millions of ids.
        skip = (type, type(sys), type(_probe), type(len))
        SAMPLE = 300
        sizes = {}
        for obj in gc.get_objects():
            try:
                attributes = object.__getattribute__(obj, "__dict__")
            except Exception:
                continue
            if isinstance(obj, type(sys)) or not isinstance(attributes, dict):
                continue
            for attribute, value in list(attributes.items()):
                label = f"{type(obj).__qualname__}.{attribute}"
                if label in found["containers"] and len(value) >= 200 and label not in sizes:
                    entries = list(value)  # (a dict's keys; their values below)
                    sample = entries[:: max(1, len(entries) // SAMPLE)][:SAMPLE]
                    todo = sample + ([value[k] for k in sample] if isinstance(value, dict) else [])
                    seen, total = {id(value), id(entries), id(sample), id(todo)}, 0
                    while todo and len(seen) < 500_000:
                        item = todo.pop()
                        if id(item) in seen or isinstance(item, skip):
                            continue
                        seen.add(id(item))
                        total += sys.getsizeof(item)
                        todo.extend(gc.get_referents(item))
                    sizes[label] = sys.getsizeof(value) + total * len(entries) // max(1, len(sample))
        found["container_bytes"] = sizes
        return found

    threading.Thread(target=_snapshots, name="soak-tracemalloc", daemon=True).start()
"""


def _short(filename: str) -> str:
    for marker in ("site-packages/", "python3.11/", str(REPO) + os.sep):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


class Tracer:
    """Asks each service for tracemalloc snapshots and compares the last with the first (the
    first starts the tracing: what the second holds more was allocated since and is still there);
    and, with or without tracing, for probes of what holds memory outside the Python objects
    (`_probe` above: SQLite's allocations, glibc's heap, the largest OrderedDicts)."""

    def __init__(self, root: Path, names: tuple[str, ...], trace: bool = True):
        self.trace = trace
        self.probes: dict[str, list[tuple[float, dict[str, Any]]]] = {name: [] for name in names}
        self.path = root / "tracemalloc-site"
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.directories = {name: root / "tracemalloc" / name for name in names}
        for directory in self.directories.values():
            directory.mkdir(parents=True, exist_ok=True)

    def overrides(self) -> dict[str, dict[str, str]]:
        path = os.pathsep.join(filter(None, [str(self.path), os.environ.get("PYTHONPATH")]))
        return {
            name: {"PYTHONPATH": path, "SOAK_TRACEMALLOC_DIR": str(directory)}
            for name, directory in self.directories.items()
        }

    async def probe(self, n: int, at: float) -> None:
        """Probe every service (`at`: seconds into the measurement), kept in `probes`."""
        for directory in self.directories.values():
            (directory / f"probe-{n}").touch()
        for name, directory in self.directories.items():
            found = directory / f"{n}.probe"
            await until(found.exists, 300, f"probe {n} of {name}")
            self.probes[name].append((at, json.loads(found.read_text())))

    async def trim(self) -> dict[str, dict[str, float]]:
        """Ask every service's glibc to give back the free memory it keeps (malloc_trim(0)):
        RSS before and after, in MB. What it gives back was free, not leaked."""
        for directory in self.directories.values():
            (directory / "trim-1").touch()
        found = {}
        for name, directory in self.directories.items():
            await until((directory / "1.trim").exists, 300, f"malloc_trim of {name}")
            trimmed = json.loads((directory / "1.trim").read_text())
            found[name] = {
                "rss_before_mb": round(trimmed["rss_before"] / 2**20, 1),
                "rss_after_mb": round(trimmed["rss_after"] / 2**20, 1),
                "seconds": round(trimmed["seconds"], 3),
            }
        return found

    async def take(self, n: int) -> None:
        if not self.trace:
            return
        for directory in self.directories.values():
            if n == 1:
                (directory / "start").touch()
            (directory / f"take-{n}").touch()
        for directory in self.directories.values():
            await until(
                lambda d=directory: (d / f"{n}.snapshot").exists(), 300, f"snapshot {n} of {directory.name}"
            )

    def growth(self, first: int, last: int, top: int = 12) -> dict[str, list[str]]:
        """Per service: where the most memory was allocated (and kept) between two snapshots."""
        import tracemalloc

        found = {}
        for name, directory in self.directories.items():
            before = tracemalloc.Snapshot.load(str(directory / f"{first}.snapshot"))
            after = tracemalloc.Snapshot.load(str(directory / f"{last}.snapshot"))
            noise = [
                tracemalloc.Filter(False, tracemalloc.__file__),
                tracemalloc.Filter(False, str(self.path / "sitecustomize.py")),
            ]
            before, after = before.filter_traces(noise), after.filter_traces(noise)
            total = sum(s.size for s in after.statistics("filename")) - sum(
                s.size for s in before.statistics("filename")
            )
            lines = [f"traced Python memory {total / 2**20:+.1f} MB in all; the largest growths:"]
            for stat in [s for s in after.compare_to(before, "traceback") if s.size_diff > 0][:top]:
                newest = list(stat.traceback)[::-1][:5]  # (the oldest frame comes first)
                frames = " <- ".join(f"{_short(f.filename)}:{f.lineno}" for f in newest)
                lines.append(f"{stat.size_diff / 2**20:+7.2f} MB {stat.count_diff:+8d} blocks  {frames}")
            found[name] = lines
        return found


# ------------------------------------------------------------------------------ the load's state


@dataclass
class Customer:
    email: str
    headers: dict[str, str] = field(default_factory=dict)
    account_id: str | None = None
    bookings: list[str] = field(default_factory=list)  # whose PlaceBooking was answered
    answered: list[float] = field(default_factory=list)  # when each of `bookings` was (monotonic)
    verified_at: float = 0.0  # when accounts answered the verification (monotonic)
    filler: bool = False  # owns the fill's bookings (`fill`); not one of the load's customers


@dataclass
class Tally:
    """What one path did: actions started, answered well, answered otherwise (by status and
    the problem's `code`, or error), skipped (too many still waiting), idle (nothing to act on
    yet: no booking answered to cancel...), and the latencies of the good answers.

    `late`: answers that a write the soak saw confirmed is not shown yet (404 for a booking
    whose PlaceBooking was answered, 403 `not_verified` for a customer accounts verified), by
    answer; each is looked at again until shown (`shown_after`: seconds from the confirmation
    to the first answer that shows it) or counted in `failed` ("404, not shown 60 s after") if
    still not shown `LATE_PATIENCE` seconds after the write. For commands (place, pay)
    `latencies` are from the send to the outcome on `bookings.command-outcomes`."""

    started: int = 0
    ok: int = 0
    skipped: int = 0
    idle: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    late: Counter[str] = field(default_factory=Counter)
    shown_after: list[float] = field(default_factory=list)

    def snapshot(self) -> tuple[int, int, int]:
        return self.started, self.ok, self.skipped


KIND_OF_SUBJECT = (
    ("verify", re.compile(r"^Verify your email")),
    ("welcome", re.compile(r"^Welcome")),
    ("cancelled (customer)", re.compile(r"^Your booking .* is cancelled")),
    ("cancelled (staff)", re.compile(r"^Booking .* cancelled")),
)
TOKEN = re.compile(r"token=([A-Za-z0-9_\-.~%]+)")


@dataclass(frozen=True)
class Answer:
    """An HTTP answer as the load counts it: its status and, for a problem, its `code`; `late`
    is when the write it depends on was confirmed (monotonic), if the answer may be the read
    model not showing it yet (see `Tally.late`); `url` and `headers` to look again, `then`
    what to do once it is shown."""

    status: int
    code: str | None = None
    late: float | None = None
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    then: Any = None

    @property
    def label(self) -> str:
        return f"{self.status} {self.code}" if self.code else str(self.status)


def answer_of(
    status: int,
    body: Any,
    late: float | None = None,
    url: str = "",
    headers: dict[str, str] | None = None,
    then: Any = None,
) -> int | Answer:
    """`status` for a 200 or 202, else its `Answer` (`body`: the problem, if any); `late` kept
    only where the answer may be the read model not showing a confirmed write yet (a 404, a
    403 `not_verified`), with what `Load.recheck` needs to look again (`then` once shown)."""
    if status in (200, 202):
        return status
    code = body.get("code") if isinstance(body, dict) else None
    if not (status == 404 or (status == 403 and code == "not_verified")):
        late = None
    return Answer(status, code, late, url, headers or {}, then)


class Mail:
    """What the mail catcher accepted (its files), counted by kind; the verification tokens of
    the addresses waiting for one."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.kinds: Counter[str] = Counter()
        self.tokens: dict[str, str] = {}
        self._read: set[str] = set()

    def scan(self, waiting: set[str]) -> None:
        if not self.directory.exists():
            return
        for entry in os.scandir(self.directory):
            if entry.name in self._read or not entry.name.endswith(".eml"):
                continue
            with open(entry.path, "rb") as file:
                message = email.message_from_binary_file(file, policy=email.policy.default)
            subject = str(message["Subject"] or "")
            kind = next((k for k, pattern in KIND_OF_SUBJECT if pattern.match(subject)), "other")
            if kind == "other" and time.time() - entry.stat().st_mtime < 5:
                continue  # perhaps still being written (the catcher writes in place): next scan
            self._read.add(entry.name)
            self.kinds[kind] += 1
            addresses = getattr(message["To"], "addresses", ())
            to = addresses[0].addr_spec if addresses else ""
            if kind == "verify" and to in waiting:
                body = message.get_body(preferencelist=("plain",))
                found = TOKEN.search(body.get_content() if body else "")
                if found:
                    self.tokens[to] = found.group(1)


class Load:
    """The soak's customers and bookings, and what it sends on their behalf."""

    def __init__(self, system: System, producer: AIOKafkaProducer, http: aiohttp.ClientSession, mail: Mail):
        self.system = system
        self.producer = producer
        self.http = http
        self.mail = mail
        self.customers: list[Customer] = []
        self.fillers: list[Customer] = []  # own the bookings `fill` reads; the load leaves them be
        self.claimed: dict[str, Customer] = {}  # waiting for their verification email
        self.to_cancel: deque[tuple[float, str, Customer]] = deque()  # answered at, booking, owner
        self.to_pay: list[str] = []
        self.commands: dict[str, str] = {}  # command id -> kind
        self.sent_at: dict[str, float] = {}  # command id -> when sent (perf_counter), until answered
        self.placing: dict[str, tuple[str, Customer]] = {}  # PlaceBooking's command id -> booking, owner
        self.rechecks: set[asyncio.Task[None]] = set()  # answers looked at again (`Tally.late`)
        self.outcomes: Counter[str] = Counter()  # "<kind> <outcome>"
        self.answered: set[str] = set()
        self.cancelled = 0
        self.tallies = {name: Tally() for name in (*PATHS, "verify")}
        self._turn = 0
        self._reads = 0
        self._claims = 0
        self.cancel_buffer = 100

    # -- commands

    async def _send(self, body: dict[str, Any], kind: str) -> None:
        key, value, headers = record(body)
        self.commands[body["command_id"]] = kind
        self.sent_at[body["command_id"]] = time.perf_counter()
        await self.producer.send(
            self.system.topic("bookings.commands"),
            value,
            key=key,
            headers=[(k, v.encode()) for k, v in headers.items()],
        )

    async def place(self) -> None:
        owners = [c for c in self.customers if c.account_id]
        if not owners:
            raise LookupError("no customer yet")
        owner = owners[self._turn % len(owners)]
        self._turn += 1
        starts = datetime.now(UTC) + timedelta(days=5 + self._turn % 50, hours=self._turn % 24)
        body = place(TENANT, owner.email, starts_at=starts, account_id=owner.account_id)
        self.placing[body["command_id"]] = (body["booking_id"], owner)
        await self._send(body, "place")

    def _placed(self, command_id: str, outcome: str | None) -> None:
        """A PlaceBooking of the load answered: the booking is stored; its owner may read it,
        and it may be cancelled or paid (the read model shows it then, or a little later)."""
        booking_id, owner = self.placing.pop(command_id)
        if outcome != "accepted":
            return
        now = time.monotonic()
        owner.bookings.append(booking_id)
        owner.answered.append(now)
        if len(self.to_cancel) < self.cancel_buffer:
            self.to_cancel.append((now, booking_id, owner))
        else:
            self.to_pay.append(booking_id)

    async def pay(self) -> None:
        if not self.to_pay:
            raise LookupError("no booking to pay yet")
        await self._send(pay(TENANT, random.choice(self.to_pay), "1.00"), "pay")  # noqa: S311

    async def consume_outcomes(self, servers: str, ready: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            self.system.topic("bookings.command-outcomes"),
            bootstrap_servers=servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        ready.set()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for r in records:
                        body = json.loads(r.value)
                        command_id = body.get("command_id", "")
                        kind = self.commands.get(command_id)
                        if kind and command_id not in self.answered:
                            self.answered.add(command_id)
                            self.outcomes[f"{kind} {body.get('outcome')}"] += 1
                            sent = self.sent_at.pop(command_id, None)
                            if kind in self.tallies and sent is not None:
                                self.tallies[kind].latencies.append((time.perf_counter() - sent) * 1000)
                            if command_id in self.placing:
                                self._placed(command_id, body.get("outcome"))
        finally:
            await consumer.stop()

    # -- customers over HTTP

    async def _call(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.http.request(method, url, **kwargs) as response:
            body = await response.read()
            parsed = body and response.content_type in ("application/json", "application/problem+json")
            return response.status, json.loads(body) if parsed else None

    async def cancel(self) -> int | Answer:
        if not self.to_cancel:
            raise LookupError("no booking answered to cancel yet")
        answered, booking_id, owner = self.to_cancel.popleft()
        path = f"{self.system.bookings.url}/v1/me/bookings/{booking_id}"
        status, quote = await self._call("GET", f"{path}/cancellation-quote", headers=owner.headers)
        if status != 200:
            late = {404: answered, 403: owner.verified_at}.get(status)
            # Shown later: back in the queue, to be cancelled then.
            again = lambda: self.to_cancel.appendleft((answered, booking_id, owner))  # noqa: E731
            return self._answer(status, quote, late, f"{path}/cancellation-quote", owner, again)
        confirm = quote["confirm"]
        status, confirmed = await self._call(
            "POST", self.system.bookings.url + confirm["href"], headers=owner.headers, json=confirm["body"]
        )
        if status == 200:
            self.cancelled += 1
        return self._answer(status, confirmed)

    async def read(self) -> int | Answer:
        readers = [c for c in self.customers if c.bookings and c.headers]
        if not readers:
            raise LookupError("no customer with an answered booking yet")
        self._reads += 1
        reader = random.choice(readers)  # noqa: S311
        url = f"{self.system.bookings.url}/v1/me/bookings"
        late = reader.verified_at
        if self._reads % 2:
            n = random.randrange(len(reader.bookings))  # noqa: S311
            url += f"/{reader.bookings[n]}"
            late = max(late, reader.answered[n])
        status, body = await self._call("GET", url, headers=reader.headers)
        return self._answer(status, body, late, url, reader)

    def _answer(
        self,
        status: int,
        body: Any,
        late: float | None = None,
        url: str = "",
        customer: Customer | None = None,
        then: Any = None,
    ) -> int | Answer:
        return answer_of(status, body, late, url, customer.headers if customer else {}, then)

    async def recheck(self, path: str, answer: Answer) -> None:
        """Look at what `answer` did not show yet every `RECHECK` s until shown (the delay from
        the confirmed write into `Tally.shown_after`), for at most `LATE_PATIENCE` s from it."""
        tally = self.tallies[path]
        assert answer.late is not None
        while True:
            await asyncio.sleep(RECHECK)
            try:
                status, body = await self._call("GET", answer.url, headers=answer.headers)
            except Exception as error:
                tally.failed[f"{type(error).__name__} looking again"] += 1
                return
            if status == 200:
                tally.shown_after.append(time.monotonic() - answer.late)
                if answer.then is not None:
                    answer.then()
                return
            code = body.get("code") if isinstance(body, dict) else None
            again = Answer(status, code)
            if (status, code) != (answer.status, answer.code):
                tally.failed[f"{again.label} looking again"] += 1
                return
            if time.monotonic() - answer.late > LATE_PATIENCE:
                tally.failed[f"{answer.label}, not shown {LATE_PATIENCE:.0f} s after"] += 1
                return

    async def claim(self, filler: bool = False) -> int:
        self._claims += 1
        address = f"c{self._claims}-{uuid.uuid4().hex[:8]}@soak.example"
        status, _ = await self._call(
            "POST",
            f"{self.system.accounts.url}/v1/tenants/{TENANT}/accounts",
            json={"email": address, "name": "Soak Customer"},
        )
        if status == 202:
            self.claimed[address] = Customer(address, filler=filler)
        return status

    async def verify(self, customer: Customer, token: str) -> int:
        status, verified = await self._call(
            "POST",
            f"{self.system.accounts.url}/v1/email-verifications",
            json={"token": token, "password": PASSWORD},
        )
        if status != 200:
            return status
        customer.account_id = verified["account_id"]
        customer.verified_at = time.monotonic()
        status = await self.log_in(customer)
        if status == 200:
            (self.fillers if customer.filler else self.customers).append(customer)
        return status

    async def log_in(self, customer: Customer | None = None) -> int:
        if customer is None:
            if not self.customers:
                raise LookupError("no customer yet")
            customer = random.choice(self.customers)  # noqa: S311
        status, session = await self._call(
            "POST",
            f"{self.system.accounts.url}/v1/tenants/{TENANT}/sessions",
            json={"email": customer.email, "password": PASSWORD},
        )
        if status == 200:
            customer.headers = {"Authorization": f"Bearer {session['token']}"}
        return status

    async def follow_links(self, stop: asyncio.Event, inflight: int) -> None:
        """Read the mail; verify each claimed address whose link arrived (and log in)."""
        running: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            await asyncio.to_thread(self.mail.scan, set(self.claimed))
            for address, token in list(self.mail.tokens.items()):
                if address in self.claimed and len(running) < inflight:
                    customer = self.claimed.pop(address)
                    del self.mail.tokens[address]
                    task = asyncio.create_task(
                        self._timed("verify", lambda c=customer, t=token: self.verify(c, t))
                    )
                    running.add(task)
                    task.add_done_callback(running.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
        if running:
            await asyncio.gather(*running)

    # -- pacing

    async def _timed(self, path: str, action: Any) -> None:
        tally = self.tallies[path]
        tally.started += 1
        began = time.perf_counter()
        try:
            status = await action()
        except LookupError:
            tally.started -= 1
            tally.idle += 1
            await asyncio.sleep(0.05)  # (a closed loop must not spin on it)
            return
        except Exception as error:  # counted and shown, the soak goes on
            tally.failed[type(error).__name__] += 1
            return
        if status in (None, 200, 202):
            tally.ok += 1
            if path not in ("place", "pay"):  # (theirs: until the outcome, `consume_outcomes`)
                tally.latencies.append((time.perf_counter() - began) * 1000)
        elif isinstance(status, Answer) and status.late is not None:
            tally.late[status.label] += 1
            task = asyncio.create_task(self.recheck(path, status))
            self.rechecks.add(task)
            task.add_done_callback(self.rechecks.discard)
        else:
            tally.failed[status.label if isinstance(status, Answer) else str(status)] += 1

    async def paced(self, path: str, rate: float, until: float, inflight: int) -> None:
        """Start action N at N / rate seconds until `until` (monotonic): an open load."""
        if rate <= 0:
            return
        action = {
            "place": self.place,
            "pay": self.pay,
            "cancel": self.cancel,
            "read": self.read,
            "claim": self.claim,
            "login": self.log_in,
        }[path]
        running: set[asyncio.Task[None]] = set()
        began, n = time.monotonic(), 0
        while (due := began + n / rate) < until:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            n += 1
            if len(running) >= inflight:
                self.tallies[path].skipped += 1
                continue
            task = asyncio.create_task(self._timed(path, action))
            running.add(task)
            task.add_done_callback(running.discard)
        if running:
            await asyncio.gather(*running)


# ------------------------------------------------------------------------------ phases


def note(text: str) -> None:
    print(f"# {datetime.now(UTC):%H:%M:%S} {text}", file=sys.stderr, flush=True)


async def until(condition: Any, patience: float, what: str) -> None:
    deadline = time.monotonic() + patience
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {patience:.0f} s")
        await asyncio.sleep(0.2)


async def seed(load: Load, customers: int) -> None:
    """The first customers: claimed, verified through the emailed link, logged in."""
    for _ in range(customers):
        await load._timed("claim", load.claim)
    await until(lambda: len(load.customers) >= customers, 600, f"{customers} customers verified")


FILLERS = 10  # customers who own the bookings the fill reads (1,000 each for 10,000)
AGGREGATES = 10_000  # eventsourcing's aggregate cache in bookings (AGGREGATE_CACHE_MAXSIZE)


async def fill(load: Load, n: int, reads: int, patience: float, inflight: int, payments: int = 0) -> float:
    """`n` PlaceBooking commands sent at once, until all are answered, then `payments`
    RecordPayment commands for as many of the guests' bookings, until answered, then `reads` of
    those bookings read once each by their owner; returns the seconds. The service's caches are
    bounded by their number of entries and grow with every new booking (aggregates, recent
    events, bookings as relayed), every booking a command loads again (eventsourcing's
    aggregate cache: a payment's or a cancellation's) and every booking read (its row, its
    summary): at the soak's rates they fill only after an hour or more, so a soak that does not
    fill them first measures them filling (see "Memory over a soak" in docs/performance.md).

    The `reads` bookings belong to `FILLERS` customers of their own (claimed, verified, logged
    in), whom the load then leaves alone: its customers' listings stay as short as without a
    fill. The others are guests' (no account: no customer lists them)."""
    began = time.monotonic()
    reads = min(reads, n)
    if reads:
        for _ in range(FILLERS):
            await load._timed("claim", lambda: load.claim(filler=True))
        await until(
            lambda: len(load.fillers) >= FILLERS, 600, f"{FILLERS} customers to own the fill verified"
        )
    ids, owned, guests = [], [], []
    starts = datetime.now(UTC) + timedelta(days=20)
    for i in range(n):
        at = starts + timedelta(minutes=i % 10_000)
        if i < reads:
            owner = load.fillers[i % FILLERS]
            body = place(TENANT, owner.email, starts_at=at, account_id=owner.account_id)
            owned.append((body["booking_id"], owner))
        else:
            body = place(TENANT, f"guest-{i}@fill.example", starts_at=at)
            guests.append(body["booking_id"])
        await load._send(body, "fill")
        ids.append(body["command_id"])
    await load.producer.flush()
    note(f"{n} PlaceBooking commands sent to fill the caches in {time.monotonic() - began:.0f} s")
    await until(lambda: load.answered.issuperset(ids), patience, f"{n} commands answered")
    if payments:
        paid = []
        for booking_id in guests[:payments]:
            body = pay(TENANT, booking_id, "1.00")
            await load._send(body, "fill payment")
            paid.append(body["command_id"])
        await load.producer.flush()
        await until(lambda: load.answered.issuperset(paid), patience, f"{len(paid)} payments answered")
        note(f"{len(paid)} of the fill's bookings paid after {time.monotonic() - began:.0f} s")
    if owned:
        note(f"{n} answered after {time.monotonic() - began:.0f} s; their owners read {len(owned)} of them")
        await read_all(load, owned, patience, inflight)
    return time.monotonic() - began


async def read_all(load: Load, owned: list[tuple[str, Customer]], patience: float, inflight: int) -> None:
    """Each booking read once by its owner (`GET /v1/me/bookings/{id}`: its row and its summary
    cached), `inflight` at once; a booking not shown yet (404: the projection is behind) is
    read again until it is, within `patience` seconds."""
    todo = deque(owned)
    deadline = time.monotonic() + patience

    async def reader() -> None:
        while todo:
            booking_id, owner = todo.popleft()
            url = f"{load.system.bookings.url}/v1/me/bookings/{booking_id}"
            status, _ = await load._call("GET", url, headers=owner.headers)
            if status == 404 and time.monotonic() < deadline:
                todo.append((booking_id, owner))
                await asyncio.sleep(0.2)
            elif status != 200:
                raise RuntimeError(f"reading a filled booking: {status}")

    await asyncio.gather(*(reader() for _ in range(inflight)))


LAGS = (
    "outbox_lag_notifications",
    "projection_lag_notifications",
    "follower_lag_notifications",
    "inbox_lag_messages",
)


async def lags(load: Load) -> dict[str, float]:
    """Every lag gauge of every service (`GET /metrics`): what each has still to catch up on."""
    found = {}
    for name in ("accounts", "bookings", "notifier"):
        async with load.http.get(f"{load.system.services[name].url}/metrics") as response:
            text = await response.text()
        for line in text.splitlines():
            if line.startswith(LAGS):
                metric, _, value = line.rpartition(" ")
                found[f"{name} {metric}"] = float(value)
    return found


async def caught_up(load: Load, patience: float) -> float:
    """Wait until every service has caught up with what the fill sent (every lag gauge at 0
    twice in a row, measured every `lag_interval_seconds`), so that the warm-up and the
    measurement start from a service with no backlog: what the fill left to do (the
    notifier's inbox, the relays, the projections) would otherwise run into the measurement
    as memory that first rises, then falls. Returns the seconds; gives up after `patience`."""
    began, zero_in_a_row, behind = time.monotonic(), 0, {}
    while zero_in_a_row < 2 and time.monotonic() - began < patience:
        behind = {k: v for k, v in (await lags(load)).items() if v > 0}
        zero_in_a_row = 0 if behind else zero_in_a_row + 1
        await asyncio.sleep(5.0)
    if behind:
        note(f"still behind after {patience:.0f} s: {behind}")
    return time.monotonic() - began


async def find_max(load: Load, seconds: float, inflight: int) -> dict[str, float]:
    """Each path alone, as fast as it goes with `inflight` actions waiting at once (a closed
    loop), for `seconds`; the commands and the emails until they are all answered/received, the
    claims until each is followed through (the emailed link followed with a password, then a
    login: two password hashes or more, as in the soak), so that the verifications do not run
    into the logins' turn."""
    found: dict[str, float] = {}
    load.cancel_buffer = 200  # the placements below fill it for the cancellations' turn

    async def closed(path: str, action: Any, clients: int) -> float:
        tally, stop_at = load.tallies[path], time.monotonic() + seconds
        before = tally.ok

        async def client() -> None:
            while time.monotonic() < stop_at:
                await load._timed(path, action)

        began = time.monotonic()
        await asyncio.gather(*(client() for _ in range(clients)))
        return (tally.ok - before) / (time.monotonic() - began)

    async def burst(kind: str, action: Any, n: int) -> float:
        ids_before = {i for i, k in load.commands.items() if k == kind}
        began = time.monotonic()
        for _ in range(n):
            await action()
        await load.producer.flush()
        ours = {i for i, k in load.commands.items() if k == kind} - ids_before
        note(f"{n} {kind} commands sent in {time.monotonic() - began:.1f} s")
        await until(lambda: ours <= load.answered, 300, f"{n} {kind} commands answered")
        return n / (time.monotonic() - began)

    n = max(300, int(seconds * 60))
    found["place"] = await burst("place", load.place, n)
    found["pay"] = await burst("pay", load.pay, n)
    note(f"maxima so far: {found}")
    claims, began = max(10, int(seconds * 4)), time.monotonic()
    verified = len(load.customers)
    await asyncio.gather(*(load._timed("claim", load.claim) for _ in range(claims)))
    await until(lambda: len(load.customers) >= verified + claims, 600, f"{claims} claims followed through")
    found["claim"] = claims / (time.monotonic() - began)
    note(f"maxima so far: {found}")
    found["login"] = await closed("login", load.log_in, 4)
    found["read"] = await closed("read", load.read, inflight)
    note(f"maxima so far: {found}")
    emails = load.mail.kinds["cancelled (staff)"]
    before, began = load.cancelled, time.monotonic()
    await closed("cancel", load.cancel, inflight)
    done = load.cancelled - before
    await until(lambda: load.mail.kinds["cancelled (staff)"] >= emails + done, 300, "cancellation emails")
    found["cancel"] = done / (time.monotonic() - began)
    return {k: float(f"{v:.3g}") for k, v in found.items()}


async def soak(
    args: argparse.Namespace, system: System, servers: str, directory: Path, tracer: Tracer | None
) -> dict[str, Any]:
    mail = Mail(directory)
    producer = AIOKafkaProducer(bootstrap_servers=servers, enable_idempotence=True, acks="all", linger_ms=5)
    await producer.start()
    connector = aiohttp.TCPConnector(limit=0)
    pids = {name: system.services[name].proc.pid for name in ("accounts", "bookings", "notifier")}
    async with aiohttp.ClientSession(connector=connector) as http:
        load = Load(system, producer, http, mail)
        stop_links, ready = asyncio.Event(), asyncio.Event()
        outcomes = asyncio.create_task(load.consume_outcomes(servers, ready))
        links = asyncio.create_task(load.follow_links(stop_links, args.inflight))
        try:
            await ready.wait()
            note(f"services ready; {args.customers} customers claim, verify and log in")
            await seed(load, args.customers)
            reads = min(args.fill, SUMMARIES if args.fill_reads is None else args.fill_reads)
            patience = max(args.patience, args.fill / 10)
            payments = min(max(0, args.fill - reads), args.fill_payments)
            filled = (
                await fill(load, args.fill, reads, patience, args.inflight, payments) if args.fill else None
            )
            if filled is not None:
                note(f"{args.fill} bookings placed and answered, {reads} of them read, in {filled:.0f} s")
                behind = await caught_up(load, args.patience)
                note(f"every service caught up with the fill {behind:.0f} s later")
            maxima = {path: value for path, (value, _) in MAXIMA.items()}
            source = {path: why for path, (_, why) in MAXIMA.items()}
            found_max = None
            if not args.recorded_maxima:
                began, load_before = time.monotonic(), os.getloadavg()[0]
                measured = await find_max(load, args.find_max_seconds, args.inflight)
                maxima.update(measured)
                found_max = {
                    "when": datetime.now(UTC).isoformat(timespec="seconds"),
                    "seconds": round(time.monotonic() - began, 1),
                    "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
                }
                when = f"measured in this run, each path alone, load {load_before:.1f}"
                source.update({path: when for path in measured})
                note(f"maxima measured in {found_max['seconds']:.0f} s: {measured}")
                # What the soak reports is the warm-up's and the measurement's: finding the maxima
                # ran every path flat out.
                load.tallies = {name: Tally() for name in load.tallies}
            rates = mixed_rates(maxima, args.scale)
            for path in PATHS:
                if (chosen := getattr(args, f"{path}_rate")) is not None:
                    rates[path], source[path] = chosen, f"--{path}-rate"
            load.cancel_buffer = int(rates["cancel"] * 30) + 20
            note(f"rates (per second): {rates}; warm-up {args.warmup:.0f} s, measured {args.duration:.0f} s")

            warmup_end = time.monotonic() + args.warmup
            end = warmup_end + args.duration
            samples: dict[str, list[tuple[float, float]]] = {name: [] for name in pids}
            kinds: dict[str, list[tuple[float, dict[str, int]]]] = {name: [] for name in pids}
            probes: list[asyncio.Task[None]] = []
            marks: dict[str, Any] = {}

            async def sample() -> None:
                await asyncio.sleep(max(0.0, warmup_end - time.monotonic()))
                marks["tallies"] = {p: t.snapshot() for p, t in load.tallies.items()}
                marks["cpu"] = {name: cpu_seconds(pid) for name, pid in pids.items()}
                marks["client"] = time.process_time()
                if tracer:
                    await tracer.take(1)
                marks["load"] = [os.getloadavg()[0]]
                began = time.monotonic()
                while (now := time.monotonic()) <= end + 0.5:
                    for name, pid in pids.items():
                        samples[name].append((now - began, rss_bytes(pid)))
                        kinds[name].append((now - began, memory_kinds(pid)))
                    marks["load"].append(os.getloadavg()[0])
                    if len(samples["bookings"]) % 12 == 1:
                        if tracer:
                            probes.append(asyncio.create_task(tracer.probe(len(probes) + 1, now - began)))
                        rss = ", ".join(f"{n} {s[-1][1] / 2**20:.0f} MB" for n, s in samples.items())
                        note(f"{now - began:4.0f} s measured: RSS {rss}; load {os.getloadavg()[0]:.1f}")
                    await asyncio.sleep(args.interval)
                marks["cpu"] = {name: cpu_seconds(pid) - marks["cpu"][name] for name, pid in pids.items()}
                marks["seconds"] = time.monotonic() - began
                marks["client"] = time.process_time() - marks["client"]
                if tracer:
                    await asyncio.gather(*probes, tracer.probe(len(probes) + 1, time.monotonic() - began))
                    marks["trimmed"] = await tracer.trim()
                    await tracer.take(2)
                marks["after"] = {p: t.snapshot() for p, t in load.tallies.items()}

            await asyncio.gather(
                sample(), *(load.paced(path, rates[path], end, args.inflight) for path in PATHS)
            )
            await producer.flush()
            note("load stopped; until every command is answered and every email has arrived")
            # Work done: every command answered, every email arrived (or the patience ran out).
            sent = set(load.commands)
            with contextlib.suppress(TimeoutError):
                await until(lambda: sent <= load.answered, args.patience, "every command answered")
            if load.rechecks:  # (each ends within LATE_PATIENCE of its write)
                await asyncio.gather(*list(load.rechecks))
            expected = {
                "cancelled (customer)": load.cancelled,
                "cancelled (staff)": load.cancelled,
                "welcome": len(load.customers),
            }
            with contextlib.suppress(TimeoutError):
                emailed = lambda: all(mail.kinds[k] >= n for k, n in expected.items())  # noqa: E731
                await until(emailed, args.patience, "every email")
        finally:
            for task in list(load.rechecks):
                task.cancel()
            stop_links.set()
            await links
            outcomes.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await outcomes
            await producer.stop()

    seconds = marks["seconds"]
    achieved = {}
    for path in PATHS:
        (_, ok0, _), (_, ok1, _) = marks["tallies"][path], marks["after"][path]
        achieved[path] = round((ok1 - ok0) / seconds, 1)
    return {
        "rates_offered": rates,
        "rates_source": source,
        "maxima": maxima,
        "maxima_measured": found_max,
        "rates_achieved": achieved,
        "measured_seconds": round(seconds, 1),
        "filled": {"bookings": args.fill, "read": reads, "paid": payments, "seconds": round(filled, 1)}
        if filled is not None
        else None,
        "load_average": {
            "min": round(min(marks["load"]), 1),
            "mean": round(sum(marks["load"]) / len(marks["load"]), 1),
            "max": round(max(marks["load"]), 1),
        },
        "rss": {name: rss_summary(s) for name, s in samples.items()},
        "rss_kinds": {name: kinds_summary(k) for name, k in kinds.items()},
        "malloc_trim_at_end": marks.get("trimmed"),
        "cpu_percent": {
            **{name: round(100 * c / seconds, 1) for name, c in marks["cpu"].items()},
            "load generator": round(100 * marks["client"] / seconds, 1),
        },
        "paths": {
            path: {
                "ok": t.ok,
                "skipped": t.skipped,
                "idle": t.idle,
                "failed": dict(t.failed),
                "p50_ms": round(percentile(t.latencies, 50), 1),
                "p99_ms": round(percentile(t.latencies, 99), 1),
                "not_yet_shown": dict(t.late),
                "shown_after_s": {
                    "n": len(t.shown_after),
                    "p50": round(percentile(t.shown_after, 50), 1),
                    "max": round(max(t.shown_after, default=0.0), 1),
                },
            }
            for path, t in load.tallies.items()
        },
        "work": {
            "commands_sent": len(load.commands),
            "commands_answered": len(set(load.commands) & load.answered),
            "outcomes": dict(load.outcomes),
            "customers_verified": len(load.customers),
            "claims_waiting_for_their_email": len(load.claimed),
            "cancellations_confirmed": load.cancelled,
            "emails_received": dict(mail.kinds),
            "emails_expected_at_least": expected,
        },
    }


# ------------------------------------------------------------------------------ main


def start(system: System, names: tuple[str, ...]) -> None:
    """`System.start`, with the patience a machine shared by several test suites needs."""
    for name in names:
        system.services[name].start()
    for name in names:
        system.services[name].wait_ready(timeout=300)
    for name in TEST_PUBLISHERS:  # the publishers whose signed commands the load sends
        system.register_publisher(name, publisher(name).public_key)


def run(args: argparse.Namespace) -> dict[str, Any]:
    with infrastructure(args.store == "postgres") as (servers, postgres):
        return run_on(args, servers, postgres)


def run_on(args: argparse.Namespace, servers: str, postgres: Any = None) -> dict[str, Any]:
    """The soak on a broker (and PostgreSQL, for `--store postgres`) already running; the
    figures as `--json` prints them (`benchmarks.pipeline` calls this, with `arguments()`)."""
    with (
        tempfile.TemporaryDirectory(prefix="soak-bench-") as tmp,
        mail_server(Path(tmp)) as (smtp_port, directory),
    ):
        names = ("accounts", "bookings", "notifier")
        wanted = args.tracemalloc or args.probe
        tracer = Tracer(Path(tmp), names, trace=args.tracemalloc) if wanted else None
        overrides = tracer.overrides() if tracer else {}
        for setting in args.service_env:  # (e.g. MALLOC_ARENA_MAX=2: glibc reads it at start)
            key, _, value = setting.partition("=")
            for name in names:
                overrides.setdefault(name, {})[key] = value
        system = System(
            Path(tmp), servers, smtp_port, store=args.store, postgres=postgres, overrides=overrides
        )
        start(system, names)
        try:
            set_tenant_settings(
                system,
                TENANT,
                customer_logins_enabled=True,
                allow_cancel=True,
                cancel_cutoff={"amount": 2, "unit": "days"},
            )
            staff = notifier_staff_headers(system, TENANT)
            import httpx

            response = httpx.patch(
                f"{system.notifier.url}/v1/staff/tenants/{TENANT}/branding",
                headers=staff,
                json={"staff_email": "staff@soak.example", "business_name": "Soak Tours"},
                timeout=30,
            )
            response.raise_for_status()
            result = asyncio.run(soak(args, system, servers, directory, tracer))
        finally:
            system.stop()
        if tracer and tracer.trace:
            result["tracemalloc"] = tracer.growth(1, 2)
        if tracer:
            result["probes"] = tracer.probes
        result["service_errors"] = {
            name: lines[:3]
            for name in ("accounts", "bookings", "notifier")
            if (lines := system.services[name].errors())
        }
    return result


def markdown(header: list[str], rows: list[list[Any]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    line = lambda cells: "| " + " | ".join(str(c).rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def table(result: dict[str, Any]) -> str:
    rss = [
        [
            name,
            s["start_mb"],
            s["end_mb"],
            s["min_mb"],
            s["max_mb"],
            f"{s['change_pct']:+}",
            f"{s['slope_mb_per_min']:+.2f}",
            "yes" if s["flat"] else "NO",
            f"{s['low_start_mb']} / {s['low_end_mb']}",
            "yes" if s.get("floor_flat") else "NO",
        ]
        for name, s in result["rss"].items()
        if s["samples"]
    ]
    paths = []
    for path in PATHS:
        p = result["paths"][path]
        failed = ", ".join(f"{n} x {why}" for why, n in p["failed"].items()) or "0"
        late = ", ".join(f"{n} x {why}" for why, n in p["not_yet_shown"].items()) or "0"
        shown = p["shown_after_s"]
        paths.append(
            [
                path,
                result["maxima"][path],
                result["rates_offered"][path],
                result["rates_achieved"][path],
                p["p50_ms"],
                p["p99_ms"],
                failed,
                late,
                f"{shown['n']}: {shown['p50']} / {shown['max']}" if shown["n"] else "",
                p["skipped"],
            ]
        )
    return "\n\n".join(
        [
            markdown(
                [
                    *("RSS", "start MB", "end MB", "min MB", "max MB", "end vs start %", "MB/min"),
                    *("within ±10 %", "lowest in first / last fifth, MB", "lowest within ±10 %"),
                ],
                rss,
            ),
            markdown(
                [
                    *("path", "max/s", "offered/s", "achieved/s", "p50 ms", "p99 ms", "failed"),
                    *("not yet shown", "shown after, s: n: p50 / max", "skipped"),
                ],
                paths,
            ),
        ]
    )


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's arguments (`argv`, or the defaults for `[]`), `--quick` applied."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=600.0, help="seconds measured (after the warm-up)")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds of load before measuring")
    parser.add_argument("--quick", action="store_true", help="60 s measured after 20 s of warm-up")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--scale",
        type=float,
        default=0.5,
        help="fraction of the machine: each path at its maximum x scale / the number of paths",
    )
    parser.add_argument(
        "--find-max",
        action="store_true",
        help="measure each path's maximum here first (the default: kept for older command lines)",
    )
    parser.add_argument(
        "--recorded-maxima",
        action="store_true",
        help="run at half of the maxima written down on 2026-11-30 (MAXIMA) instead of measuring them",
    )
    parser.add_argument(
        "--find-max-seconds", type=float, default=5.0, help="per path, when measuring the maxima (--quick: 2)"
    )
    parser.add_argument("--customers", type=int, default=20, help="customers verified before the load")
    parser.add_argument(
        "--patience", type=float, default=180.0, help="seconds to wait for the last answers and emails"
    )
    parser.add_argument(
        "--fill",
        type=int,
        default=0,
        help="PlaceBooking commands (guests') sent at once before the warm-up, to fill the caches",
    )
    parser.add_argument(
        "--fill-reads",
        type=int,
        help=f"of the --fill bookings, how many their owners read once (default {SUMMARIES:,}: as many as "
        "the read caches keep)",
    )
    parser.add_argument(
        "--fill-payments",
        type=int,
        default=AGGREGATES,
        help=f"of the --fill bookings (guests'), how many are paid once (default {AGGREGATES:,}: as many "
        "aggregates as eventsourcing's cache keeps)",
    )
    parser.add_argument("--inflight", type=int, default=32, help="actions per path waiting at once")
    for path in PATHS:
        parser.add_argument(
            f"--{path}-rate", type=float, help=f"{path} per second (instead of the scaled maximum)"
        )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="trace the services' allocations; print what grew over the measurement (slows them)",
    )
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a variable in every service's environment (repeatable), e.g. MALLOC_ARENA_MAX=2",
    )
    parser.add_argument(
        "--probe",
        action="store_true",
        help="ask each service every minute what holds its memory (SQLite, malloc's heap, caches)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = min(args.duration, 60.0), min(args.warmup, 20.0)
        args.find_max_seconds = min(args.find_max_seconds, 2.0)
    return args


def main() -> None:
    args = arguments()
    if args.json:  # the local servers' log lines (structlog prints to stdout by default) go aside
        import structlog

        structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    when = datetime.now(UTC)
    result = {"when": when.isoformat(), "cpus": os.cpu_count(), "store": args.store, **run(args)}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    load = result["load_average"]
    work = result["work"]
    print(
        f"# booking-accounts soak, {when:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, {args.store} stores: "
        f"{result['measured_seconds']:.0f} s measured after {args.warmup:.0f} s of warm-up, RSS every "
        f"{args.interval:g} s; load average {load['min']}-{load['max']} (mean {load['mean']})"
    )
    print(table(result))
    print(
        f"work: {work['commands_answered']} of {work['commands_sent']} commands answered {work['outcomes']}; "
        f"{work['customers_verified']} customers verified ({work['claims_waiting_for_their_email']} claims "
        f"still waiting); {work['cancellations_confirmed']} cancellations; emails {work['emails_received']} "
        f"(at least {work['emails_expected_at_least']} expected)"
    )
    print(f"service CPU over the measurement: {result['cpu_percent']} % of one core")
    print(f"maxima from: {result['rates_source']}")
    for name, kinds in result["rss_kinds"].items():
        print(
            f"{name} RSS by kind: "
            + "; ".join(
                f"{kind} {k['start_mb']} -> {k['end_mb']} MB ({k['slope_mb_per_min']:+.2f} MB/min)"
                for kind, k in kinds.items()
            )
        )
    for name, trimmed in (result.get("malloc_trim_at_end") or {}).items():
        before, after = trimmed["rss_before_mb"], trimmed["rss_after_mb"]
        print(f"{name}: malloc_trim(0) at the end: RSS {before} -> {after} MB")
    for name, probes in result.get("probes", {}).items():
        print(f"\n{name} probes (MB; caches in entries):")
        for at, found in probes:
            mb = {k: round(v / 2**20, 1) for k, v in found.items() if k.startswith(("sql", "malloc", "py"))}
            print(f"  {at:5.0f} s: {mb} threads {found['threads']} containers {found['containers']}")
            print(f"    container bytes {found.get('container_bytes')}")
    for name, lines in result.get("tracemalloc", {}).items():
        print(f"\n{name}: " + "\n  ".join(lines))
    for name, lines in result["service_errors"].items():
        print(f"# {name} logged errors, e.g. {lines[0]}", file=sys.stderr)


if __name__ == "__main__":
    main()
