"""Cancel -> email: how long after a customer confirms a cancellation the email reaches the
mail server, at a fixed offered rate of cancellations.

    python -m benchmarks.latency                        # 50 cancels/s for 60 s
    python -m benchmarks.latency --quick                # 50 cancels/s for 15 s
    python -m benchmarks.latency --rate 1 --duration 60 # one at a time
    python -m benchmarks.latency --json
    python -m benchmarks.latency --profile /tmp/lat     # py-spy records bookings and notifier

Everything runs as in production, each in its own OS process: the bookings and notifier
services (`python -m services.<name>`, SQLite stores) on a real Kafka broker (the local one of
`deploy.local` unless KAFKA_BOOTSTRAP_SERVERS names one), and the mail catcher of
`deploy.local` as the SMTP server, which writes each message it accepts to a file named by the
moment it accepted it. The accounts service is played on the bus (its events, subject keys and
a staff member's key, as its relay publishes them), and customers' sessions are signed with
the key the bookings service trusts, as in the integration tests.

The load is open: cancellation N starts at N / rate seconds whatever became of the earlier
ones (a customer does not wait for another customer). Each asks for the quote over HTTP, then
confirms it (POST); the clock of a cancellation starts when its confirm is sent. Each
cancellation makes two emails (the customer's, the staff notice); the customer's is measured.

Printed: p50/p90/p99/max of confirm -> email accepted by the SMTP server and of the HTTP
confirm alone, and where the time goes, stage by stage, from timestamps taken without touching
the services: the client's clock, the `BookingCancelled` event's time (bookings, when the
cancellation was decided, just before its commit), the Kafka record's timestamp (the relay
handed it to its producer), the notifier's `Email.Queued` event (its inbox handled the event),
its `Email.AttemptStarted` event (the sender claimed the email), and the mail server's
acceptance. All are wall-clock times of this one machine. Also the services' CPU time per
cancellation (from /proc, less what each uses idle: steadier than latencies on a shared
machine) and the load average.
Asserts nothing.
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
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from backbone.credentials import load_or_create_sealing_keys, new_token, staff_api_key, token_hash
from benchmarks.reads import cpu_seconds, percentile
from deploy.local._proc import free_ports, spawn, terminate_group
from deploy.local.kafka import LocalKafka
from tests.support.bookings import AccountsFeed, BookingsBus, place, session_token
from tests.support.system import REPO, System, admitted_by_notifier, all_events, open_store, read_topic

TENANT = "bench-latency"
IDLE_SECONDS = 3.0
STAGES = (
    ("confirm sent -> cancellation decided", "sent", "decided"),
    ("decided -> relay published", "decided", "published"),
    ("published -> notifier queued the email", "published", "queued"),
    ("queued -> sender claimed it", "queued", "claimed"),
    ("claimed -> SMTP server accepted it", "claimed", "accepted"),
)


@dataclass
class Cancel:
    """One customer's cancellation: the client's times (wall clock, seconds since the epoch)
    and the services' timestamps, gathered after the run."""

    booking_id: str
    headers: dict[str, str]
    due: float = 0.0  # monotonic offset from the start at which it was meant to start
    late: float = 0.0  # how much later than that it started (the load generator's lag)
    status: int | None = None
    times: dict[str, float] = field(default_factory=dict)  # stage -> wall clock

    def span(self, start: str, end: str) -> float | None:
        if start in self.times and end in self.times:
            return (self.times[end] - self.times[start]) * 1000
        return None


# ------------------------------------------------------------------------------ infrastructure


@contextlib.contextmanager
def kafka() -> Iterator[str]:
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if servers:
        yield servers
        return
    broker = LocalKafka()
    try:
        yield broker.start(timeout=120)
    finally:
        broker.close()


@contextlib.contextmanager
def mail_server(root: Path) -> Iterator[tuple[int, Path]]:
    """The mail catcher in its own process (not sharing our interpreter), writing each message
    it accepts to `<root>/mail/<UTC time of acceptance>-<n>.eml`."""
    smtp_port, http_port = free_ports(2)
    directory = root / "mail"
    argv = [sys.executable, "-m", "deploy.local", "mailcatcher", "--smtp-port", str(smtp_port)]
    argv += ["--http-port", str(http_port), "--directory", str(directory)]
    proc = spawn(argv, log_file=root / "mailcatcher.log", cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{http_port}/api/messages", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the mail catcher did not start: {(root / 'mailcatcher.log').read_text()}"
                )
            time.sleep(0.2)
        yield smtp_port, directory
    finally:
        terminate_group(proc)


class Mailbox:
    """What the mail catcher accepted: Message-ID -> when (wall clock), read from its files."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.accepted: dict[str, float] = {}
        self._read: set[str] = set()

    def scan(self) -> dict[str, float]:
        for path in sorted(self.directory.glob("*.eml")) if self.directory.exists() else ():
            if path.name in self._read:
                continue
            stamp = datetime.strptime(path.name.split("-", 1)[0], "%Y%m%dT%H%M%S.%f").replace(tzinfo=UTC)
            with path.open("rb") as file:
                headers = email.message_from_binary_file(file, policy=email.policy.default)
            self._read.add(path.name)
            self.accepted[str(headers["Message-ID"]).strip()] = stamp.timestamp()
        return self.accepted

    async def until_received(self, wanted: set[str], patience: float) -> None:
        deadline = time.monotonic() + patience
        while not wanted <= set(await asyncio.to_thread(self.scan)):
            if time.monotonic() > deadline:
                missing = len(wanted - set(self.accepted))
                print(
                    f"# {missing} of {len(wanted)} emails not received after {patience:.0f} s",
                    file=sys.stderr,
                )
                return
            await asyncio.sleep(0.5)


# ------------------------------------------------------------------------------ data


def seed(system: System, bus: BookingsBus, cancels: int, per_customer: int) -> list[Cancel]:
    """A tenant with cancelling allowed up to 2 days before the start, a staff address for
    the staff notices, and enough verified customers with open bookings to cancel."""
    bus.hear(
        bus.accounts.settings(
            TENANT,
            allow_cancel=True,
            cancel_cutoff={"amount": 2, "unit": "days"},
            timezone="Europe/Vienna",
        )
    )
    # A staff member (announced as accounts does) sets where staff notices go.
    staff_id, secret = uuid.uuid4(), new_token()
    bus.hear(
        bus.accounts._event(
            "StaffMemberAdded", 1, str(staff_id), staff_id=str(staff_id), key_hash=token_hash(secret)
        )
    )
    staff = admitted_by_notifier(
        system, TENANT, {"Authorization": f"Bearer {staff_api_key(staff_id, secret)}"}
    )
    response = httpx.patch(
        f"{system.notifier.url}/v1/staff/tenants/{TENANT}/branding",
        headers=staff,
        json={"staff_email": "staff@bench-latency.example", "business_name": "Latency Tours"},
        timeout=30,
    )
    assert response.status_code == 200, response.text

    now = datetime.now(UTC)
    key_file = system.root / "accounts" / "session-signing-key.pem"
    records, commands, found = [], [], []
    for c in range((cancels + per_customer - 1) // per_customer):
        account_id, address = uuid.uuid4(), f"customer{c}@bench-latency.example"
        records += bus.accounts.claimed_and_verified(account_id, address, TENANT)
        headers = session_token(key_file, account_id, TENANT, now - timedelta(minutes=1))
        for b in range(per_customer):
            body = place(
                TENANT,
                address,
                starts_at=now + timedelta(days=5 + b, hours=c % 24),
                paid="30.00",
                account_id=account_id,
            )
            commands.append(body)
            found.append(Cancel(body["booking_id"], headers))
    bus.hear(*records)
    for start in range(0, len(commands), 2000):
        bus.send(*commands[start : start + 2000])
    return found[:cancels]


async def until_cancellable(url: str, cancels: list[Cancel], patience: float = 600) -> None:
    """Until every booking to cancel is listed for its customer (bookings heard everything)."""
    deadline = time.monotonic() + patience
    by_customer: dict[str, set[str]] = {}
    for cancel in cancels:
        by_customer.setdefault(cancel.headers["Authorization"], set()).add(cancel.booking_id)
    async with aiohttp.ClientSession() as session:
        for token, wanted in by_customer.items():
            while True:
                async with session.get(f"{url}/v1/me/bookings", headers={"Authorization": token}) as response:
                    listed = (
                        {b["booking_id"] for b in await response.json()} if response.status == 200 else set()
                    )
                if wanted <= listed:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(wanted - listed)} bookings not listed after {patience:.0f} s")
                await asyncio.sleep(0.5)


# ------------------------------------------------------------------------------ load


async def cancel_all(url: str, cancels: list[Cancel], rate: float) -> float:
    """Start cancellation N at N / rate seconds (an open load); returns the seconds it took."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(cancel: Cancel, began: float) -> None:
            await asyncio.sleep(max(0.0, began + cancel.due - time.monotonic()))
            cancel.late = time.monotonic() - began - cancel.due
            path = f"{url}/v1/me/bookings/{cancel.booking_id}"
            async with session.get(f"{path}/cancellation-quote", headers=cancel.headers) as response:
                if response.status != 200:
                    cancel.status = response.status
                    return
                confirm = (await response.json())["confirm"]
            cancel.times["sent"] = time.time()
            async with session.post(
                url + confirm["href"], headers=cancel.headers, json=confirm["body"]
            ) as answer:
                await answer.read()
                cancel.times["confirmed"] = time.time()
                cancel.status = answer.status

        for n, cancel in enumerate(cancels):
            cancel.due = n / rate
        began = time.monotonic()
        await asyncio.gather(*(one(cancel, began) for cancel in cancels))
        return time.monotonic() - began


# ------------------------------------------------------------------------------ timestamps


def timestamps(system: System) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """From the bookings topic and the notifier's store (read after the services stopped):
    each cancellation's `BookingCancelled` record, and each email's event times."""
    cancelled = {}
    for record in asyncio.run(read_topic(system.kafka, system.topic("bookings.events"))):
        body = json.loads(record.value)
        if body.get("event_type") == "BookingCancelled":
            cancelled[body["booking_id"]] = (body, record.timestamp / 1000)
    notifier = open_store(system, "notifier")
    emails: dict[str, dict[str, Any]] = {}
    try:
        for event in all_events(notifier):
            kind = type(event).__name__
            entry = emails.setdefault(str(event.originator_id), {})
            if kind == "Queued":
                entry.update(queued=event.timestamp.timestamp(), booking_id=str(event.booking_id))
                entry["template"] = event.template
            elif kind == "AttemptStarted" and "claimed" not in entry:
                entry["claimed"] = event.timestamp.timestamp()
    finally:
        notifier.close()
    return cancelled, emails


def gather_times(
    cancels: list[Cancel], cancelled: dict[str, Any], emails: dict[str, Any], seen: dict[str, float]
) -> None:
    by_booking = {
        e["booking_id"]: (email_id, e)
        for email_id, e in emails.items()
        if e.get("template") == "booking_cancelled"
    }
    for cancel in cancels:
        if cancel.booking_id in cancelled:
            body, published = cancelled[cancel.booking_id]
            cancel.times["decided"] = datetime.fromisoformat(body["occurred_at"]).timestamp()
            cancel.times["published"] = published
        if cancel.booking_id in by_booking:
            email_id, entry = by_booking[cancel.booking_id]
            cancel.times.update({k: entry[k] for k in ("queued", "claimed") if k in entry})
            accepted = seen.get(f"<{email_id}@booking-accounts.notifier>")
            if accepted:
                cancel.times["accepted"] = accepted


# ------------------------------------------------------------------------------ main


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 1),
        "p90": round(percentile(values, 90), 1),
        "p99": round(percentile(values, 99), 1),
        "max": round(max(values, default=float("nan")), 1),
    }


def profile(pids: dict[str, int], out: str | None, seconds: float) -> list[subprocess.Popen[bytes]]:
    if not out:
        return []
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("# --profile: py-spy not installed (pip install py-spy); not profiling", file=sys.stderr)
        return []
    Path(out).mkdir(parents=True, exist_ok=True)
    processes = []
    for name, pid in pids.items():
        argv = [py_spy, "record", "--pid", str(pid), "--threads", "--gil", "--format", "raw"]
        argv += ["--duration", str(int(seconds)), "--output", str(Path(out) / f"{name}.txt")]
        processes.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # noqa: S603
    return processes


def run(args: argparse.Namespace, servers: str, root: Path) -> dict[str, Any]:
    with mail_server(root) as (smtp_port, directory):
        mailbox = Mailbox(directory)
        system = System(root, servers, smtp_port)
        system.start("bookings", "notifier")
        try:
            _, notifier_key = load_or_create_sealing_keys(root / "notifier" / "sealing.key")
            bus = BookingsBus(servers, system, AccountsFeed(TENANT, notifier_public_key=notifier_key))
            cancels = seed(system, bus, args.warmup + int(args.rate * args.duration), args.per_customer)
            random.Random(7).shuffle(cancels)  # noqa: S311 - customers and partitions mixed
            asyncio.run(until_cancellable(system.bookings.url, cancels))
            warmup, measured = cancels[: args.warmup], cancels[args.warmup :]
            pids = {"bookings": system.bookings.proc.pid, "notifier": system.notifier.proc.pid}

            async def warm_then_measure() -> tuple[float, float, dict[str, float]]:
                # Warm-up: pools, caches, connections; and the notifier done with the seeding.
                await cancel_all(system.bookings.url, warmup, min(args.rate, 10))
                await mailbox.until_received(await asyncio.to_thread(message_ids, system, warmup), 120)
                await asyncio.sleep(2)
                idle = {name: cpu_seconds(pid) for name, pid in pids.items()}
                await asyncio.sleep(IDLE_SECONDS)  # what the services use doing nothing
                idle = {name: (cpu_seconds(pid) - idle[name]) / IDLE_SECONDS for name, pid in pids.items()}
                profilers = profile(pids, args.profile, args.duration)
                cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
                load = os.getloadavg()[0]
                began = time.monotonic()
                seconds = await cancel_all(system.bookings.url, measured, args.rate)
                await mailbox.until_received(await asyncio.to_thread(message_ids, system, measured), 120)
                busy = time.monotonic() - began
                cpu = {name: cpu_seconds(pid) - cpu[name] - idle[name] * busy for name, pid in pids.items()}
                for profiler in profilers:
                    profiler.wait(timeout=120)
                return seconds, (load + os.getloadavg()[0]) / 2, cpu

            seconds, load, cpu = asyncio.run(warm_then_measure())
        finally:
            system.stop()
        errors = {name: system.services[name].errors() for name in pids}
        cancelled, emails = timestamps(system)
        gather_times(measured, cancelled, emails, mailbox.scan())
    ok = [c for c in measured if c.status == 200]
    starts = sorted(c.due + c.late for c in measured)
    return {
        "rate_offered": args.rate,
        "rate_achieved": round((len(measured) - 1) / max(starts[-1] - starts[0], 1e-9), 1),
        "seconds_until_answered": round(seconds, 1),
        "cancels": len(measured),
        "http_errors": len(measured) - len(ok),
        "emailed": len([c for c in ok if "accepted" in c.times]),
        "load_average": round(load, 1),
        "cpu_ms_per_cancel": {name: round(s * 1000 / max(1, len(ok)), 2) for name, s in cpu.items()},
        "client_late_p99_ms": round(percentile([c.late * 1000 for c in measured], 99), 1),
        "confirm_to_email_ms": summary([v for c in ok if (v := c.span("sent", "accepted")) is not None]),
        "http_confirm_ms": summary([v for c in ok if (v := c.span("sent", "confirmed")) is not None]),
        "stages_ms": {
            label: summary([v for c in ok if (v := c.span(a, b)) is not None]) for label, a, b in STAGES
        },
        "service_errors": {name: lines[:3] for name, lines in errors.items() if lines},
    }


def message_ids(system: System, cancels: list[Cancel]) -> set[str]:
    """The Message-IDs of these cancellations' emails to their customers, derived as the
    notifier derives them (from the event id of `BookingCancelled`)."""
    from services.notifier.domainmodel import Email

    wanted = {c.booking_id for c in cancels}
    ids = set()
    for record in asyncio.run(read_topic(system.kafka, system.topic("bookings.events"))):
        body = json.loads(record.value)
        if body.get("event_type") == "BookingCancelled" and body["booking_id"] in wanted:
            email_id = Email.create_id(uuid.UUID(body["event_id"]), "booking_cancelled")
            ids.add(f"<{email_id}@booking-accounts.notifier>")
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=50.0, help="cancellations offered per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of offered load")
    parser.add_argument("--warmup", type=int, default=20, help="cancellations before measuring")
    parser.add_argument("--per-customer", type=int, default=20, help="bookings per customer")
    parser.add_argument("--quick", action="store_true", help="15 s of load")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--profile", metavar="DIR", help="record bookings and notifier with py-spy into DIR")
    args = parser.parse_args()
    if args.quick:
        args.duration = min(args.duration, 15.0)
    when = datetime.now(UTC)
    with kafka() as servers, tempfile.TemporaryDirectory(prefix="latency-bench-") as tmp:
        result = run(args, servers, Path(tmp))
    result = {"when": when.isoformat(), "cpus": os.cpu_count(), **result}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"# booking-accounts cancel -> email latency, {when:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
        f"load {result['load_average']}: {result['cancels']} cancels offered at {args.rate:g}/s "
        f"(achieved {result['rate_achieved']}/s, client late p99 {result['client_late_p99_ms']} ms), "
        f"{result['http_errors']} HTTP errors, {result['emailed']} emails measured"
    )
    rows = [("confirm -> email at the SMTP server", result["confirm_to_email_ms"])]
    rows += [("HTTP confirm", result["http_confirm_ms"])]
    rows += [(f"  {label}", s) for label, s in result["stages_ms"].items()]
    print(f"| {'ms':<42} | {'p50':>7} | {'p90':>7} | {'p99':>7} | {'max':>7} | {'n':>5} |")
    print(f"|{'-' * 44}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 7}|")
    for label, s in rows:
        print(
            f"| {label:<42} | {s['p50']:>7} | {s['p90']:>7} | {s['p99']:>7} | {s['max']:>7} | {s['n']:>5} |"
        )
    cpu = ", ".join(f"{name} {ms} ms" for name, ms in result["cpu_ms_per_cancel"].items())
    print(f"service CPU per cancellation (less what it uses idle): {cpu}")
    for name, lines in result["service_errors"].items():
        print(f"# {name} logged errors, e.g. {lines[0]}", file=sys.stderr)


if __name__ == "__main__":
    main()
