"""One bookings instance against three, on the same load: total rate, rate per instance, and
whether any work was done twice.

    python -m benchmarks.scale_out                    # from the repository root
    python -m benchmarks.scale_out --commands 2000    # a quicker run
    python -m benchmarks.scale_out --json             # machine-readable figures on stdout

It starts the local Kafka broker and PostgreSQL server of `deploy.local` unless
KAFKA_BOOTSTRAP_SERVERS (and POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, POSTGRES_PASSWORD)
name them. For each instance count, in one run: a fresh topic namespace and fresh databases,
the bookings service started that many times as OS processes (one PostgreSQL database, topics
of 6 partitions), all of them ready and in their consumer group; then the same number of
PlaceBooking commands published at once, and the clock stops when every command's outcome is
on `bookings.command-outcomes`. Printed per row:

* total: commands answered per second, all instances together;
* per instance: the total divided by the instance count;
* share: the commands each instance applied (its `inbox_messages_total{outcome="applied"}`),
  which shows the partitions really are spread;
* twice: commands applied more than once (stored `BookingPlaced` events beyond one per
  booking, plus the instances' applied counts beyond the command count).

On a machine with 2 cores, where three processes share the CPU with the broker and the
database, CPU-bound work cannot scale: what the comparison shows is that the split is real,
that no work is duplicated and that the total does not fall. Asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deploy.local.kafka import LocalKafka
from deploy.local.postgres import LocalPostgres, PostgresParams
from services.bookings.domainmodel import Booking
from tests.support.bookings import AccountsFeed, BookingsBus, place
from tests.support.scaleout import Fleet, TopicTail, inbox_counts, wait_until
from tests.support.system import all_events, open_store

TENANT = "bench"


@contextlib.contextmanager
def kafka() -> Iterator[str]:
    if servers := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield servers
        return
    broker = LocalKafka()
    try:
        yield broker.start(timeout=240)
    finally:
        broker.close()


@contextlib.contextmanager
def postgres() -> Iterator[PostgresParams]:
    if host := os.environ.get("POSTGRES_HOST"):
        yield PostgresParams(
            host,
            int(os.environ["POSTGRES_PORT"]),
            os.environ["POSTGRES_USER"],
            os.environ["POSTGRES_PASSWORD"],
        )
        return
    server = LocalPostgres()
    try:
        yield server.start(timeout=240)
    finally:
        server.close()


def run(root: Path, servers: str, database: PostgresParams, instances: int, commands: int) -> dict[str, Any]:
    fleet = Fleet.create(root, servers, database, smtp_port=1, counts={"bookings": instances})
    system = fleet.system
    fleet.start()
    try:
        placed = [place(TENANT, f"guest{i}@example.com") for i in range(commands)]
        wanted = {c["command_id"] for c in placed}
        bus = BookingsBus(servers, system, AccountsFeed(TENANT))
        with TopicTail(servers, system.topic("bookings.command-outcomes")) as outcomes:
            began = time.monotonic()
            bus.send(*placed)

            def answered() -> int:
                return len({o["command_id"] for o in outcomes.snapshot()} & wanted)

            wait_until(
                lambda: answered() == commands,
                lambda: f"{instances} instance(s): {answered()}/{commands} answered",
                timeout=600 + commands / 5,
                every=0.2,
            )
            seconds = time.monotonic() - began
            copies = len(outcomes.snapshot()) - commands
        applied = [
            sum(v for (consumer, outcome), v in inbox_counts(i).items() if outcome == "applied")
            for i in fleet.instances["bookings"]
        ]
    finally:
        fleet.stop()
    app = open_store(system, "bookings")
    try:
        placed_events = Counter(e.originator_id for e in all_events(app) if isinstance(e, Booking.Placed))
    finally:
        app.close()
    stored_twice = sum(n - 1 for n in placed_events.values())
    return {
        "instances": instances,
        "commands": commands,
        "seconds": round(seconds, 2),
        "total_per_s": round(commands / seconds, 1),
        "per_instance_per_s": round(commands / seconds / instances, 1),
        "applied_by_instance": [int(a) for a in applied],
        "stored": len(placed_events),
        "applied_twice": stored_twice + max(0, int(sum(applied)) - commands),
        "outcome_copies": copies,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--commands", type=int, default=6000)
    parser.add_argument("--instances", default="1,3", help="instance counts to compare, comma-separated")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    counts = [int(n) for n in args.instances.split(",")]
    rows = []
    with kafka() as servers, postgres() as database, tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            print(f"{n} instance(s), {args.commands} PlaceBooking commands ...", file=sys.stderr, flush=True)
            rows.append(run(Path(tmp) / f"x{n}", servers, database, n, args.commands))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    base = rows[0]["total_per_s"]
    print(f"bookings, PostgreSQL, 6 partitions, {os.cpu_count()} CPUs; {args.commands} commands per row")
    header = ("instances", "seconds", "total/s", "ratio", "per inst/s", "twice")
    print(" ".join(f"{h:>10}" for h in header), " applied by instance")
    for row in rows:
        print(
            f"{row['instances']:>10} {row['seconds']:>10.1f} {row['total_per_s']:>10.1f} "
            f"{row['total_per_s'] / base:>10.2f} {row['per_instance_per_s']:>10.1f} "
            f"{row['applied_twice']:>10}  "
            f"{row['applied_by_instance']} (outcome copies on the bus: {row['outcome_copies']})"
        )


if __name__ == "__main__":
    main()
