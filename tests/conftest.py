"""Session-wide infrastructure fixtures: Kafka, PostgreSQL, Redis, an SMTP catcher.

    kafka_bootstrap_servers  str             env / testcontainers / LocalKafka
    local_kafka              LocalKafka      only when the broker is LocalKafka (restart tests)
    postgres                 PostgresParams  env / testcontainers / LocalPostgres
                                             .create_database(n) .drop_database(n) .dsn(n)
    local_postgres           LocalPostgres   only when PostgreSQL is LocalPostgres
    redis                    RedisParams     env (REDIS_URL) / LocalRedis   .url .rate_limit_storage
    local_redis              LocalRedis      only when Redis is LocalRedis (kill/restart/pause tests)
    mail_server              MailCatcher     a fresh SMTP catcher per test on a free port

See tests/support/infra.py for the resolution order and the environment variables.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from deploy.local.kafka import LocalKafka
from deploy.local.mailcatcher import MailCatcher
from deploy.local.postgres import LocalPostgres, PostgresParams
from deploy.local.redis import LocalRedis, RedisParams
from tests.support.infra import (
    KAFKA,
    POSTGRES,
    REDIS,
    RESOURCE_FIXTURES,
    InfraManager,
    KafkaHandle,
    PostgresHandle,
    RedisHandle,
    Unavailable,
    require_infra,
)

# Property tests check rules, never speed: no per-example deadline and no "too slow" health
# check, which only measure how busy the machine is (a shared CI runner, several suites).
settings.register_profile("rules", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("rules")

_manager = InfraManager()


def _get(name: str) -> KafkaHandle | PostgresHandle | RedisHandle:
    try:
        return _manager.get(name)
    except Unavailable as exc:
        if require_infra():
            pytest.fail(f"{exc} (BOOKING_ACCOUNTS_REQUIRE_INFRA is set)", pytrace=False)
        pytest.skip(str(exc))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="tests/faults: the issue's outage lengths (minutes), not the short CI ones.",
    )


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start (in the background) every resource that a selected test needs."""
    if session.config.option.collectonly:
        return
    needed = {
        name
        for item in session.items
        for name, fixtures in RESOURCE_FIXTURES.items()
        if any(f in getattr(item, "fixturenames", ()) for f in fixtures)
    }
    _manager.prestart(needed)


@pytest.fixture(scope="session", autouse=True)
def _infra_teardown() -> Iterator[None]:
    """Stop the resources as the last session teardown (its output is then captured)."""
    yield
    _manager.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _manager.close()  # safety net (e.g. interrupted runs); no-op after _infra_teardown


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = _manager.summary_lines()
    if lines:
        terminalreporter.write_sep("-", "test infrastructure")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def kafka_bootstrap_servers() -> str:
    """``host:port`` of a Kafka 4.x broker with single-node internal-topic settings."""
    handle = _get(KAFKA)
    assert isinstance(handle, KafkaHandle)
    return handle.bootstrap_servers


@pytest.fixture(scope="session")
def local_kafka(kafka_bootstrap_servers: str) -> LocalKafka:
    """The LocalKafka behind ``kafka_bootstrap_servers``, for broker restart/kill tests.

    Restarts keep the bootstrap address, so other tests are unaffected.
    """
    handle = _get(KAFKA)
    assert isinstance(handle, KafkaHandle)
    if handle.local is None:
        pytest.skip(f"the broker is not a LocalKafka (source: {handle.source})")
    return handle.local


@pytest.fixture(scope="session")
def postgres() -> PostgresParams:
    """Superuser connection params with create_database/drop_database/dsn."""
    handle = _get(POSTGRES)
    assert isinstance(handle, PostgresHandle)
    return handle.params


@pytest.fixture(scope="session")
def local_postgres(postgres: PostgresParams) -> LocalPostgres:
    """The LocalPostgres behind ``postgres``, for kill/restart tests."""
    handle = _get(POSTGRES)
    assert isinstance(handle, PostgresHandle)
    if handle.local is None:
        pytest.skip(f"PostgreSQL is not a LocalPostgres (source: {handle.source})")
    return handle.local


@pytest.fixture(scope="session")
def redis() -> RedisParams:
    """Where the session's Redis is (``.url``, ``.rate_limit_storage`` for the accounts service).
    Tests share it: each uses keys of its own (a test namespace, a fresh address or client)."""
    handle = _get(REDIS)
    assert isinstance(handle, RedisHandle)
    return handle.params


@pytest.fixture(scope="session")
def local_redis(redis: RedisParams) -> LocalRedis:
    """The LocalRedis behind ``redis``, for kill/restart/SIGSTOP tests (restarts keep the port
    and the password; the counters are gone)."""
    handle = _get(REDIS)
    assert isinstance(handle, RedisHandle)
    if handle.local is None:
        pytest.skip(f"Redis is not a LocalRedis (source: {handle.source})")
    return handle.local


@pytest.fixture
def mail_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailCatcher]:
    """A running MailCatcher on 127.0.0.1:<free port> (``.port``), .eml files in a tmp dir."""
    catcher = MailCatcher(port=0, directory=tmp_path_factory.mktemp("mail"))
    catcher.start()
    try:
        yield catcher
    finally:
        catcher.stop()
