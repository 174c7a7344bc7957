"""The standing fault suite's fixtures: one system of three services on PostgreSQL (module
scope: started once for all its faults) with the accounts' rate limits on the session's Redis,
an SMTP server that can be stopped and made to refuse, and the outage lengths (short by default;
`--long` or BOOKING_ACCOUNTS_FAULTS_LONG=1 for the lengths of the issue: broker 60 s, PostgreSQL
30 s, SMTP 60 s, SIGSTOP 20 s, Redis 30 s)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from deploy.local.mailcatcher import MailCatcher
from tests.faults.ledger import Books
from tests.support.ops import Ops
from tests.support.system import TEST_PUBLISHERS, System, publisher

LONG_ENV = "BOOKING_ACCOUNTS_FAULTS_LONG"


@dataclass(frozen=True)
class Outages:
    broker: float
    postgres: float
    smtp: float
    sigstop: float
    redis: float
    settle: float  # how long the system may take to catch up after a fault


@pytest.fixture(scope="session")
def outages(request: pytest.FixtureRequest) -> Outages:
    long = bool(request.config.getoption("--long", default=False)) or os.environ.get(LONG_ENV) == "1"
    if long:
        return Outages(broker=60, postgres=30, smtp=60, sigstop=20, redis=30, settle=240)
    return Outages(broker=4, postgres=4, smtp=4, sigstop=6, redis=4, settle=120)


@pytest.fixture(scope="module")
def mail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailCatcher]:
    catcher = MailCatcher(port=0, directory=tmp_path_factory.mktemp("faults-mail")).start()
    yield catcher
    catcher.stop()


# Small batches keep work in flight when a fault strikes; quick SMTP retries and a short
# sending lease keep a short run short (the defaults are 30 s and 5 min).
OVERRIDES = {
    "bookings": {"CONSUMER_BATCH_SIZE": "10", "RELAY_BATCH_SIZE": "10"},
    "accounts": {"CONSUMER_BATCH_SIZE": "10", "RELAY_BATCH_SIZE": "10"},
    "notifier": {
        "RETRY_BASE_SECONDS": "1",
        "RETRY_MAX_SECONDS": "4",
        "MAX_ATTEMPTS": "40",  # 4 s apart: an SMTP outage of 2+ minutes (--long) parks nothing
        "SMTP_TIMEOUT_SECONDS": "5",
        "SENDING_LEASE_SECONDS": "15",
    },
}


@pytest.fixture(scope="module")
def pg_system(tmp_path_factory, local_kafka, local_postgres, postgres, mail, local_redis) -> Iterator[System]:
    root = tmp_path_factory.mktemp("faults-pg")
    rate_limits = {"RATE_LIMIT_STORAGE": local_redis.params.rate_limit_storage}
    system = System(
        root,
        local_kafka.bootstrap_servers,
        mail.port,
        store="postgres",
        postgres=postgres,
        overrides={**OVERRIDES, "accounts": {**OVERRIDES["accounts"], **rate_limits}},
    )
    for service in system.services.values():
        service.start()
    for service in system.services.values():
        service.wait_ready(timeout=300)  # a loaded machine (and a broker just restarted) is slow
    for name in list(TEST_PUBLISHERS):  # the command publishers the ledger's commands come from
        system.register_publisher(name, publisher(name).public_key)
    yield system
    system.stop()


@pytest.fixture(scope="module")
def books(pg_system, mail, tmp_path_factory) -> Books:
    return Books(pg_system, mail, Ops(pg_system, tmp_path_factory.mktemp("faults-ops")))
