"""How fast the bookings service answers its customers' reads: requests/s and latencies of
`GET /v1/me/bookings` and `GET /v1/me/bookings/{id}`, over real HTTP, on SQLite and PostgreSQL.

    python -m benchmarks.reads                       # SQLite then PostgreSQL, 30 s each
    python -m benchmarks.reads --quick               # 8 s each
    python -m benchmarks.reads --stores sqlite --duration 60 --writes 20 --json
    python -m benchmarks.reads --profile /tmp/reads  # py-spy (if installed) records the services
    python -m benchmarks.reads --rates 250,500,1000  # and the latencies at these offered rates

The bookings service runs as in production: its own OS process (`python -m services.bookings`,
uvicorn), its inbox and key consumers on a real Kafka broker, its followers (relay, projection,
eraser) running beside the HTTP API. The accounts service is played on the bus (its events and
subject keys, as its relay publishes them) and customers' sessions are signed with the key the
service trusts, as in the integration tests. Kafka and PostgreSQL are the local throw-away
servers of `deploy.local` unless KAFKA_BOOTSTRAP_SERVERS or POSTGRES_HOST point elsewhere.

The load: N verified customers (20) with M bookings each (10), each customer one client with
its own keep-alive connection, alternating its listing and one of its bookings, as fast as the
answers come, for a fixed duration after a warm-up. That closed loop finds the most requests a
second the service answers; its latencies are then mostly queueing (20 clients always waiting:
latency = 20 / rate). `--rates` adds open-loop runs at fixed offered rates, where a latency is
what a customer waits at that load, counted from when the request was due. `--writes R` also
sends R payment commands a second through Kafka meanwhile (the consumers and the projection
then work during the reads).

Three audiences (`--audiences`), one after the other on the same data: customers on the
bookings API; the tenant's staff on its staff API (the list, a search by a word of a
customer's email, one booking in full); and customers on the portal's pages (My bookings, one
booking), rendered by the portal from the bookings API with the branding from the notifier.

Printed per store and audience: requests/s, p50/p90/p99/max latency, errors, and the service's CPU time per
request (from /proc, less what it uses idle: steadier than requests/s on a shared machine) and
the load generator's own CPU use (near 100 % means the client, not the service, was the
limit). Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import httpx

from backbone.credentials import new_token, staff_api_key, token_hash
from deploy.local.kafka import LocalKafka
from deploy.local.postgres import LocalPostgres, PostgresParams
from services.portal.web import COOKIE, Sealer, Visitor
from tests.support.bookings import AccountsFeed, BookingsBus, pay, place, session_token
from tests.support.system import System

TENANT = "bench-tours"


@dataclass
class Result:
    store: str
    duration_s: float
    requests: int
    errors: int
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    list_p50_ms: float
    detail_p50_ms: float
    service_cpu_ms_per_request: float
    client_cpu_percent: float
    writes_sent: int


# ------------------------------------------------------------------------------ infrastructure


@contextlib.contextmanager
def infrastructure(with_postgres: bool) -> Iterator[tuple[str, PostgresParams | None]]:
    with contextlib.ExitStack() as stack:
        kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not kafka:
            broker = LocalKafka()
            stack.callback(broker.close)
            kafka = broker.start(timeout=120)
        postgres = None
        if with_postgres and os.environ.get("POSTGRES_HOST"):
            postgres = PostgresParams(
                os.environ["POSTGRES_HOST"],
                int(os.environ.get("POSTGRES_PORT", "5432")),
                os.environ.get("POSTGRES_USER", "postgres"),
                os.environ.get("POSTGRES_PASSWORD", ""),
            )
        elif with_postgres:
            server = LocalPostgres()
            server.ensure_installed()
            stack.callback(server.close)
            postgres = server.start(timeout=120)
        yield kafka, postgres


# ------------------------------------------------------------------------------ data


@dataclass
class Customer:
    account_id: uuid.UUID
    email: str
    headers: dict[str, str]
    booking_ids: list[str]


def seed(system: System, bus: BookingsBus, customers: int, per_customer: int) -> list[Customer]:
    """A tenant with self-service on, N verified customers, M bookings each (varied: some
    cancellable, some past the cut-off, some paid in part or in full)."""
    bus.hear(
        bus.accounts.settings(
            TENANT,
            allow_cancel=True,
            cancel_cutoff={"amount": 2, "unit": "days"},
            allow_modify=True,
            modify_cutoff={"amount": 1, "unit": "days"},
            blocking_statuses=["PAID"],
            timezone="Europe/Vienna",
        )
    )
    now = datetime.now(UTC)
    key_file = system.root / "accounts" / "session-signing-key.pem"
    people, commands, records = [], [], []
    for c in range(customers):
        account_id, email = uuid.uuid4(), f"customer{c}@example.com"
        records += bus.accounts.claimed_and_verified(account_id, email, TENANT)
        ids = []
        for b in range(per_customer):
            status, paid = [("PEND", "0.00"), ("PART", "30.00"), ("PAID", "105.00")][b % 3]
            body = place(
                TENANT,
                email,
                starts_at=now + timedelta(days=1 + 3 * b, hours=c),
                status=status,
                paid=paid,
                account_id=account_id if b % 2 else None,  # some made before the account existed
            )
            commands.append(body)
            ids.append(body["booking_id"])
        headers = session_token(key_file, account_id, TENANT, now - timedelta(minutes=1))
        people.append(Customer(account_id, email, headers, ids))
    bus.hear(*records)
    bus.send(*commands)
    return people


async def until_listed(url: str, people: list[Customer], per_customer: int) -> None:
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 180
        for person in people:
            while True:
                async with session.get(f"{url}/v1/me/bookings", headers=person.headers) as response:
                    found = await response.json() if response.status == 200 else []
                if len(found) == per_customer:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{person.account_id}: {len(found)} of {per_customer} bookings listed")
                await asyncio.sleep(0.2)


# ------------------------------------------------------------------------------ load


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Audience:
    """Who reads, where, what: `request(person, turn)` is the turn-th (kind, path) of a client
    playing `person`; `pids` are the processes whose CPU time the requests cost."""

    name: str
    url: str
    pids: list[int]
    headers: Callable[[Customer], dict[str, str]]
    request: Callable[[Customer, int], tuple[str, str]]


def customers(system: System) -> Audience:
    """Customers on the bookings API: their listing, then one of their bookings."""

    def request(person: Customer, turn: int) -> tuple[str, str]:
        if turn % 2 == 0:
            return "list", "/v1/me/bookings"
        return "detail", f"/v1/me/bookings/{person.booking_ids[(turn // 2) % len(person.booking_ids)]}"

    return Audience("customer", system.bookings.url, [system.bookings.proc.pid], lambda p: p.headers, request)


def staff(system: System, key: str) -> Audience:
    """A tenant's staff on the bookings staff API: the first page of the list, a search by a
    word of a customer's email, and one booking in full, in turn."""
    base = f"/v1/staff/tenants/{TENANT}/bookings"

    def request(person: Customer, turn: int) -> tuple[str, str]:
        if turn % 3 == 0:
            return "list", f"{base}?limit=50"
        if turn % 3 == 1:
            return "search", f"{base}?customer={person.email.split('@')[0]}"
        return "detail", f"{base}/{person.booking_ids[(turn // 3) % len(person.booking_ids)]}"

    headers = {"Authorization": f"Bearer {key}"}
    return Audience("staff", system.bookings.url, [system.bookings.proc.pid], lambda _: headers, request)


def portal(system: System) -> Audience:
    """Customers on the portal's pages (rendered by the portal from the bookings API, with the
    business's branding from the notifier): My bookings, then one booking's page. CPU time is
    that of the three processes."""
    sealer = Sealer(Path(system.portal.env["DATA_DIR"]) / "portal-cookie.key", 3600)

    def headers(person: Customer) -> dict[str, str]:
        visitor = Visitor(kind="customer", tenant=TENANT, credential=person.headers["Authorization"][7:])
        return {"Cookie": f"{COOKIE}={sealer.seal(visitor)}"}

    def request(person: Customer, turn: int) -> tuple[str, str]:
        if turn % 2 == 0:
            return "list", f"/t/{TENANT}/bookings"
        return "detail", f"/t/{TENANT}/bookings/{person.booking_ids[(turn // 2) % len(person.booking_ids)]}"

    pids = [system.services[name].proc.pid for name in ("portal", "bookings", "notifier")]
    return Audience("portal", system.portal.url, pids, headers, request)


async def load(
    audience: Audience, people: list[Customer], clients: int, seconds: float
) -> tuple[list[tuple[str, float, int]], float]:
    """Each client: one person, one keep-alive connection, their requests in turn, as fast as answered."""
    samples: list[tuple[str, float, int]] = []
    stop_at = time.monotonic() + seconds

    async def client(person: Customer) -> None:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector, headers=audience.headers(person)) as session:
            turn = 0
            while time.monotonic() < stop_at:
                kind, path = audience.request(person, turn)
                began = time.perf_counter()
                async with session.get(audience.url + path, allow_redirects=False) as response:
                    await response.read()
                    status = response.status
                samples.append((kind, time.perf_counter() - began, status))
                turn += 1

    began = time.monotonic()
    await asyncio.gather(*(client(people[i % len(people)]) for i in range(clients)))
    return samples, time.monotonic() - began


async def paced(
    audience: Audience, people: list[Customer], rate: float, seconds: float
) -> tuple[list[tuple[str, float, int]], float]:
    """Open loop: requests sent at `rate` per second in all, spread evenly over the customers,
    each when it is due whether or not the earlier ones were answered (up to 8 connections per
    customer). A latency counts from when the request was due, so a slow answer that held
    back the next request shows in that one too (no coordinated omission)."""
    samples: list[tuple[str, float, int]] = []
    per_customer = rate / len(people)
    start = time.monotonic() + 0.1
    stop_at = start + seconds

    async def one(session: aiohttp.ClientSession, kind: str, path: str, due: float) -> None:
        async with session.get(audience.url + path, allow_redirects=False) as response:
            await response.read()
            samples.append((kind, time.monotonic() - due, response.status))

    async def customer(i: int, person: Customer) -> None:
        connector = aiohttp.TCPConnector(limit=8)
        async with aiohttp.ClientSession(connector=connector, headers=audience.headers(person)) as session:
            sent: set[asyncio.Task[None]] = set()
            turn = 0
            while (due := start + i / rate + turn / per_customer) < stop_at:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                kind, path = audience.request(person, turn)
                task = asyncio.create_task(one(session, kind, path, due))
                sent.add(task)
                task.add_done_callback(sent.discard)
                turn += 1
            await asyncio.gather(*sent)

    await asyncio.gather(*(customer(i, person) for i, person in enumerate(people)))
    return samples, time.monotonic() - start


async def writes(bus: BookingsBus, people: list[Customer], rate: float, seconds: float) -> int:
    """Payment commands through Kafka at `rate` per second (of 0.01, so bookings stay open)."""
    if rate <= 0:
        return 0
    from tests.support.bookings import record
    from tests.support.system import publish

    sent, began = 0, time.monotonic()
    rng = random.Random(7)  # noqa: S311 - which booking gets paid
    while (elapsed := time.monotonic() - began) < seconds:
        due = int(elapsed * rate) + 1 - sent
        if due > 0:
            bodies = [pay(TENANT, rng.choice(rng.choice(people).booking_ids), "0.01") for _ in range(due)]
            await publish(bus.kafka, bus.topic("bookings.commands"), [record(b) for b in bodies])
            sent += due
        await asyncio.sleep(0.05)
    return sent


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def measure(
    store: str,
    audience: Audience,
    bus: BookingsBus,
    people: list[Customer],
    args: argparse.Namespace,
    rate: float | None = None,
) -> Result:
    await load(audience, people, args.clients, args.warmup)  # warm caches, pools, connections

    def cpu() -> float:
        return sum(cpu_seconds(pid) for pid in audience.pids)

    idle = cpu()
    await asyncio.sleep(2.0)
    idle = (cpu() - idle) / 2.0  # the followers' and consumers' own polling
    label = f"{store} {audience.name}" + ("" if rate is None else f" @{rate:g}/s")
    profilers = [
        start_profiler(pid, f"{label.replace(' ', '-')}-{n}", args)
        for n, pid in enumerate(audience.pids if rate is None else [])
    ]
    service_cpu, client_cpu = cpu(), time.process_time()
    (samples, seconds), sent = await asyncio.gather(
        load(audience, people, args.clients, args.duration)
        if rate is None
        else paced(audience, people[: args.clients], rate, args.duration),
        writes(bus, people, args.writes, args.duration),
    )
    service_cpu, client_cpu = cpu() - service_cpu, time.process_time() - client_cpu
    for profiler in profilers:
        stop_profiler(profiler)
    ok = [s for s in samples if s[2] == 200]
    latencies = [s[1] * 1000 for s in ok]
    return Result(
        store=label,
        duration_s=round(seconds, 2),
        requests=len(samples),
        errors=len(samples) - len(ok),
        requests_per_s=round(len(samples) / seconds, 1),
        p50_ms=round(percentile(latencies, 50), 2),
        p90_ms=round(percentile(latencies, 90), 2),
        p99_ms=round(percentile(latencies, 99), 2),
        max_ms=round(max(latencies, default=float("nan")), 2),
        list_p50_ms=round(percentile([s[1] * 1000 for s in ok if s[0] == "list"], 50), 2),
        detail_p50_ms=round(percentile([s[1] * 1000 for s in ok if s[0] == "detail"], 50), 2),
        service_cpu_ms_per_request=round((service_cpu - idle * seconds) * 1000 / max(1, len(samples)), 3),
        client_cpu_percent=round(100 * client_cpu / seconds, 1),
        writes_sent=sent,
    )


def start_profiler(pid: int, store: str, args: argparse.Namespace) -> subprocess.Popen[bytes] | None:
    if not args.profile:
        return None
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("# --profile: py-spy not installed (pip install py-spy); not profiling", file=sys.stderr)
        return None
    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    # Only the thread holding the GIL: where the service's Python code spends its CPU time.
    argv = [py_spy, "record", "--pid", str(pid), "--threads", "--gil", "--format", "raw"]
    argv += ["--duration", str(int(args.duration)), "--output", str(out / f"{store}.txt")]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603


def stop_profiler(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is not None:
        profiler.wait(timeout=60)


def run(store: str, kafka: str, postgres: PostgresParams | None, args: argparse.Namespace) -> list[Result]:
    """Per audience, the closed-loop result (as fast as answered), then one per `--rates` rate."""
    with tempfile.TemporaryDirectory(prefix=f"reads-bench-{store}-") as root:
        pages = "portal" in args.audiences
        system = System(Path(root), kafka, smtp_port=1, store=store, postgres=postgres, with_portal=pages)
        system.start(*(["bookings", "notifier", "portal"] if pages else ["bookings"]))
        try:
            bus = BookingsBus(kafka, system, AccountsFeed(TENANT))
            people = seed(system, bus, args.customers, args.bookings)
            asyncio.run(until_listed(system.bookings.url, people, args.bookings))
            audiences = {"customer": lambda: customers(system)}
            if "staff" in args.audiences:
                key = staff_key(system, bus)
                audiences["staff"] = lambda: staff(system, key)
            if pages:
                audiences["portal"] = lambda: portal(system)
            results = []
            for name in args.audiences:
                audience = audiences[name]()
                results.append(asyncio.run(measure(store, audience, bus, people, args)))
                for rate in args.rates if name == "customer" else ():
                    results.append(asyncio.run(measure(store, audience, bus, people, args, rate=rate)))
                if not args.json:
                    print(f"# {results[-1].store}: {results[-1].requests_per_s:.0f} requests/s", flush=True)
            for service in system.services.values():
                errors = service.errors() if service.proc is not None else []
                if errors:
                    print(
                        f"# {store} {service.name}: logged {len(errors)} error(s), e.g. {errors[0]}",
                        file=sys.stderr,
                    )
            return results
        finally:
            system.stop()
            if postgres is not None:
                for name in system.services:
                    with contextlib.suppress(Exception):
                        postgres.drop_database(f"{system.namespace}_{name}")


def staff_key(system: System, bus: BookingsBus) -> str:
    """A staff member's API key, announced as accounts does, once bookings accepts it."""
    staff_id, secret = uuid.uuid4(), new_token()
    bus.hear(bus.accounts.staff_member_added(staff_id, token_hash(secret)))
    key = staff_api_key(staff_id, secret)
    deadline = time.monotonic() + 60
    while True:
        answer = httpx.get(
            f"{system.bookings.url}/v1/staff/tenants/{TENANT}/bookings?limit=1",
            headers={"Authorization": f"Bearer {key}"},
        )
        if answer.status_code == 200:
            return key
        if time.monotonic() > deadline:
            raise TimeoutError(f"bookings did not accept the staff key: {answer.status_code} {answer.text}")
        time.sleep(0.2)


COLUMNS = (
    ("store", "store", "{}"),
    ("req/s", "requests_per_s", "{:.0f}"),
    ("p50 ms", "p50_ms", "{:.1f}"),
    ("p90 ms", "p90_ms", "{:.1f}"),
    ("p99 ms", "p99_ms", "{:.1f}"),
    ("max ms", "max_ms", "{:.0f}"),
    ("list p50", "list_p50_ms", "{:.1f}"),
    ("detail p50", "detail_p50_ms", "{:.1f}"),
    ("requests", "requests", "{}"),
    ("errors", "errors", "{}"),
    ("svc CPU ms/req", "service_cpu_ms_per_request", "{:.2f}"),
    ("client CPU %", "client_cpu_percent", "{:.0f}"),
    ("writes", "writes_sent", "{}"),
)


def table(results: list[Result]) -> str:
    rows = [[title for title, _, _ in COLUMNS]]
    rows += [[fmt.format(getattr(r, key)) for _, key, fmt in COLUMNS] for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stores", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured per store")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--bookings", type=int, default=10, help="per customer")
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients (one per customer)")
    parser.add_argument(
        "--writes", type=float, default=0.0, help="payment commands/s through Kafka meanwhile"
    )
    parser.add_argument(
        "--rates",
        default="",
        help="also offer these total request rates (comma-separated, per second), open loop: "
        "the latencies a customer sees at that load",
    )
    parser.add_argument(
        "--audiences",
        default="customer,staff,portal",
        help="comma-separated: customer (the bookings API), staff (its staff API), portal (the pages)",
    )
    parser.add_argument("--quick", action="store_true", help="8 s per store, 1 s warm-up")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--profile", metavar="DIR", help="record the service with py-spy into DIR")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup = min(args.duration, 8.0), min(args.warmup, 1.0)
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    args.audiences = [a.strip() for a in args.audiences.split(",") if a.strip()]
    unknown = set(args.audiences) - {"customer", "staff", "portal"}
    if unknown:
        parser.error(f"unknown audience(s): {', '.join(sorted(unknown))}")
    header = (
        f"# booking-accounts reads benchmark: {args.customers} customers x {args.bookings} bookings, "
        f"{args.clients} clients, {args.duration:.0f} s per store, {args.writes:g} writes/s; "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    if not args.json:
        print(header, flush=True)
    results = []
    with infrastructure("postgres" in stores) as (kafka, postgres):
        for store in stores:
            results += run(store, kafka, postgres if store == "postgres" else None, args)
    if not args.json:
        print(table(results))
    else:
        print(json.dumps({"settings": vars(args), "results": [asdict(r) for r in results]}, indent=2))


if __name__ == "__main__":
    main()
