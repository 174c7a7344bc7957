"""The standing fault suite: each fault of an operator's bad day, against the real processes
(three services on PostgreSQL, a Kafka broker, an SMTP server), under load.

After each fault the books (`tests/faults/ledger.py`) count by id what was asked and what came
out: commands answered, `BookingPlaced` on the bus and in the store, `AccountClaimed` and the
emails at the SMTP server, dead letters, and whether everything caught up. They are printed (run
with `-s` to see them); a fault passes with 0 lost, 0 applied twice and 0 dead letters.

Short outages by default, to fit CI; `--long` (or BOOKING_ACCOUNTS_FAULTS_LONG=1) gives the
lengths of a real bad day. Redis holds the accounts' rate limits: while it is gone, limited
requests are refused with 503 (counted by kind here), and nothing else is disturbed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from deploy.local.mailcatcher import MailCatcher
from tests.faults.ledger import Books, Counts, Round
from tests.support.ops import Ops
from tests.support.system import (
    TEST_PUBLISHERS,
    System,
    command_record,
    place_booking_command,
    publish,
    publisher,
    wait_for,
)
from tests.support.topics import recreate_topic

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(600)]

FIGURES: list[str] = []  # one line per fault, printed at the end of the module


@pytest.fixture(scope="module", autouse=True)
def _print_figures():
    yield
    if FIGURES:
        print("\n\nfault suite figures:\n  " + "\n  ".join(FIGURES))


def settle(books: Books, r: Round, timeout: float, refused: int = 0) -> Counts:
    try:
        wait_for(
            lambda: books.answered(r) == r.commands and books.emailed(r) >= r.claims - refused,
            timeout=timeout,
            interval=0.5,
            what=f"{r.name}: every command answered and every email delivered",
        )
    except TimeoutError:
        print("\n" + books.count(r, refused=refused, caught_up=False).line(r.name + " (NOT SETTLED)"))
        raise
    wait_for(books.caught_up, timeout=timeout, interval=1, what=f"{r.name}: everything caught up")
    return books.count(r, refused=refused, caught_up=True)


def judge(r: Round, counts: Counts) -> None:
    line = counts.line(r.name)
    FIGURES.append(line)
    print("\n" + line)
    assert counts.lost == 0, line
    assert counts.twice == 0, line
    assert sum(counts.dead_letters.values()) == 0, line
    assert counts.placed_events == counts.commands and counts.claimed_events == len(r.addresses), line


def under_way(books: Books, r: Round, at_least: int = 5) -> None:
    """Commands being applied, and the round's claims recorded (a claim answered 202 is only
    queued in memory until then: accounts/deferred.py documents that a kill loses it)."""
    wait_for(
        lambda: books.answered(r) >= min(at_least, r.commands) and books.claimed(r) == r.claims,
        timeout=90,
        interval=0.2,
        what=f"{r.name}: load under way",
    )


@pytest.mark.parametrize("service", ["bookings", "accounts", "notifier"])
def test_kill_9_of_a_service_under_load(pg_system: System, books: Books, outages, service):
    r = Round(f"kill -9 {service}")
    r.claim_accounts(pg_system)
    r.send_commands(pg_system)
    under_way(books, r)
    pg_system.services[service].kill()
    time.sleep(1)
    pg_system.services[service].start().wait_ready()
    judge(r, settle(books, r, outages.settle))


def test_kill_9_of_the_broker_and_an_outage(pg_system: System, books: Books, outages, local_kafka):
    r = Round(f"kill -9 broker, {outages.broker:.0f} s down")
    r.claim_accounts(pg_system)
    r.send_commands(pg_system)
    under_way(books, r)
    local_kafka.kill()
    time.sleep(outages.broker)
    local_kafka.restart(timeout=300)  # a loaded machine can take minutes
    judge(r, settle(books, r, outages.settle + outages.broker))


def test_kill_9_of_postgresql_and_an_outage(pg_system: System, books: Books, outages, local_postgres):
    r = Round(f"kill -9 PostgreSQL, {outages.postgres:.0f} s down")
    r.claim_accounts(pg_system)
    r.send_commands(pg_system)
    under_way(books, r)
    local_postgres.kill()
    time.sleep(outages.postgres)
    local_postgres.restart(timeout=300)
    judge(r, settle(books, r, outages.settle + outages.postgres))


def test_postgresql_stalled_by_sigstop(pg_system: System, books: Books, outages, local_postgres):
    r = Round(f"SIGSTOP PostgreSQL {outages.sigstop:.0f} s")
    r.claim_accounts(pg_system)
    r.send_commands(pg_system)
    under_way(books, r)
    pids = _postgres_pids(local_postgres)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(outages.sigstop)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    judge(r, settle(books, r, outages.settle + outages.sigstop))


def test_smtp_down_then_4xx_then_5xx_for_one_recipient(
    pg_system: System, books: Books, outages, mail: MailCatcher
):
    down = Round(f"SMTP down {outages.smtp:.0f} s", commands=0)
    mail.stop()
    try:
        down.claim_accounts(pg_system)
        time.sleep(outages.smtp)
    finally:
        mail.start()
    judge(down, settle(books, down, outages.settle))

    temporary = Round("SMTP answering 451", commands=0)
    mail.fail_all(temporary=True)
    try:
        temporary.claim_accounts(pg_system)
        time.sleep(min(outages.smtp, 5))
    finally:
        mail.clear_failures()
    judge(temporary, settle(books, temporary, outages.settle))

    permanent = Round("SMTP answering 550 for one recipient", commands=0)
    refused = permanent.addresses[0]
    mail.fail_recipient(refused)
    try:
        permanent.claim_accounts(pg_system)
        counts = settle(books, permanent, outages.settle, refused=1)
        parked = _parked(pg_system)
    finally:
        mail.accept_recipient(refused)
    judge(permanent, counts)
    assert parked >= 1 and not mail.messages_to(refused)  # parked for an operator, not lost


def test_redis_killed_then_stalled_under_load(pg_system: System, books: Books, outages, local_redis):
    """The accounts' rate limits live in Redis. While it is down (kill -9) or stalled (SIGSTOP),
    every login is refused with 503 `rate_limits_unavailable` and Retry-After: never let through
    uncounted, never a 4xx that blames the caller, never a 500. The bus and the stores are not
    involved: the round's commands and emails go through untouched, and logins are counted
    again as soon as Redis answers."""
    r = Round(f"Redis kill -9 {outages.redis:.0f} s, then SIGSTOP {outages.redis:.0f} s")
    r.claim_accounts(pg_system)
    r.send_commands(pg_system)
    under_way(books, r)
    logins: Counter[str] = Counter()
    local_redis.kill()
    try:
        _logins_during(pg_system, r, outages.redis, logins, "down")
    finally:
        local_redis.restart()
    _logins_during(pg_system, r, 1, logins, "back")
    local_redis.pause()
    try:
        _logins_during(pg_system, r, outages.redis, logins, "stalled")
    finally:
        local_redis.resume()
    _logins_during(pg_system, r, 1, logins, "back")
    counts = settle(books, r, outages.settle + 2 * outages.redis)
    FIGURES.append(f"{r.name}: logins answered " + ", ".join(f"{k}: {v}" for k, v in sorted(logins.items())))
    judge(r, counts)
    assert logins["down 503"] >= 1 and logins["stalled 503"] >= 1, logins
    assert logins["back 401"] >= 2, logins
    assert set(logins) <= {"down 503", "stalled 503", "back 401"}, logins  # nothing else, ever
    assert pg_system.accounts.proc.poll() is None  # the service lived through it


def _logins_during(system: System, r: Round, seconds: float, answers: Counter[str], phase: str) -> None:
    """Wrong passwords for the round's addresses for `seconds` (at least one)."""
    deadline = time.monotonic() + seconds
    n = 0
    while n == 0 or time.monotonic() < deadline:
        response = httpx.post(
            f"{system.accounts.url}/v1/tenants/{r.tenant}/sessions",
            json={"email": r.addresses[n % len(r.addresses)], "password": "not-the-password"},
            timeout=30,
        )
        answers[f"{phase} {response.status_code}"] += 1
        if response.status_code == 503:
            assert response.json()["code"] == "rate_limits_unavailable", response.text
            assert int(response.headers["retry-after"]) >= 1
        n += 1
        time.sleep(0.2)


def test_a_topic_deleted_and_created_again_under_a_running_service(pg_system: System, books: Books, outages):
    r = Round("topic bookings.commands deleted and created again", claims=0)
    r.send_commands(pg_system)
    wait_for(lambda: books.answered(r) == r.commands, timeout=outages.settle, what="the first life applied")
    topic = pg_system.topic("bookings.commands")
    asyncio.run(recreate_topic(pg_system.kafka, topic, partitions=3))
    second = Round("second life", claims=0, commands=9)
    second.send_commands(pg_system)

    def stalled() -> list[str]:
        response = httpx.get(f"{pg_system.bookings.url}/ready", timeout=5)
        detail = response.json().get("detail", "") if response.status_code == 503 else ""
        return sorted({f"{topic}/{p}" for p in range(3) if f"{topic}/{p}:" in detail})

    partitions = wait_for(stalled, timeout=60, what="the partitions of the old life stalled")
    assert books.answered(second) == 0  # stalled: nothing of the new life skipped or applied yet
    for partition in partitions:
        books.ops.run("positions", "replay-from-start", "bookings", partition, "--note", "fault suite")
    r.command_list += second.command_list
    r.commands += second.commands
    r.name = "topic deleted and created again, replayed from the start"
    judge(r, settle(books, r, outages.settle))


def test_a_full_disk_under_the_sqlite_store(tmp_path, local_kafka, mail, outages):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        [shutil.which("mount") or "/bin/mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    overrides = {"bookings": {**OVERRIDES_BOOKINGS, "DATA_DIR": str(disk)}}  # the stores, not the logs
    system = System(tmp_path, local_kafka.bootstrap_servers, mail.port, overrides=overrides)
    try:
        system.bookings.start().wait_ready(timeout=300)
        for name in list(TEST_PUBLISHERS):  # the publishers the ledger's commands come from
            system.register_publisher(name, publisher(name).public_key)
        filler = disk / "filler"
        r = Round("full disk (SQLite), bookings", claims=0, commands=30)
        with filler.open("wb") as f:  # fill it up, to the last block
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        r.send_commands(system)
        time.sleep(5)  # the inbox fails to write, again and again: it must stall, not dead-letter
        books = Books(system, mail, Ops(system, tmp_path))
        stalled_answered = books.answered(r)
        dead = books.dead_letters()["bookings"]
        filler.unlink()
        wait_for(
            lambda: books.answered(r) == r.commands, timeout=outages.settle, what="answered after the disk"
        )
        system.stop()
        counts = books.count(r, caught_up=False)  # only bookings ran: the lags are its own
        line = f"{r.name}: {stalled_answered} answered while the disk was full, then " + (
            f"{counts.answered}/{counts.commands} answered, {counts.placed_in_store} in the store "
            f"({counts.placed_twice_in_store} twice), dead letters while full {dead}, "
            f"after {counts.dead_letters['bookings']}"
        )
        FIGURES.append(line)
        print("\n" + line)
        assert dead == 0 and counts.dead_letters["bookings"] == 0, line
        assert (
            counts.answered == counts.placed_in_store == r.commands and counts.placed_twice_in_store == 0
        ), line
    finally:
        system.stop()
        subprocess.run([shutil.which("umount") or "/bin/umount", "-l", str(disk)], check=False)


OVERRIDES_BOOKINGS = {"CONSUMER_BATCH_SIZE": "10", "RELAY_BATCH_SIZE": "10"}


def _postgres_pids(local_postgres) -> list[int]:
    postmaster = local_postgres._postmaster_pid()
    assert postmaster, "PostgreSQL is not running"
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            children.append(int(stat.parent.name))
    return [postmaster, *children]


def _parked(system: System) -> int:
    metrics = httpx.get(f"{system.notifier.url}/metrics", timeout=5).text
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("notifier_emails_total{") and 'outcome="refused"' in line
        )
    )


_ = (command_record, place_booking_command, publish)
