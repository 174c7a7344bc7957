"""Where the tests get Kafka and PostgreSQL from, and how they are started and stopped.

Resolution order for each resource (first that applies wins):

* Kafka:      $KAFKA_BOOTSTRAP_SERVERS  ->  testcontainers (if a Docker engine answers)
              ->  deploy.local.kafka.LocalKafka (Maven jars + java)
* PostgreSQL: $POSTGRES_HOST (+ _PORT/_USER/_PASSWORD)  ->  testcontainers PostgresContainer
              ->  deploy.local.postgres.LocalPostgres (distribution binaries, apt if root)
* Redis:      $REDIS_URL  ->  deploy.local.redis.LocalRedis (Debian's redis-server, apt if
              root; it starts in milliseconds, so no container is tried)

$BOOKING_ACCOUNTS_INFRA=local|docker forces one of the last two (default: auto).
When nothing is possible the requesting tests are skipped with the reason - unless
$BOOKING_ACCOUNTS_REQUIRE_INFRA=1 (set by ./deploy/test), which turns the skip into a failure.

Resources start lazily - only if a selected test needs them - but in the background as soon
as collection is finished, concurrently, so the broker boots while PostgreSQL initialises
and while tests that need neither already run. Everything is stopped at session end.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from deploy.local._proc import InfraError, ToolMissingError
from deploy.local.kafka import LocalKafka
from deploy.local.postgres import LocalPostgres, PostgresParams
from deploy.local.redis import LocalRedis, RedisParams

INFRA_ENV = "BOOKING_ACCOUNTS_INFRA"
REQUIRE_ENV = "BOOKING_ACCOUNTS_REQUIRE_INFRA"
KAFKA_IMAGE_ENV = "BOOKING_ACCOUNTS_KAFKA_IMAGE"
POSTGRES_IMAGE_ENV = "BOOKING_ACCOUNTS_POSTGRES_IMAGE"
# Confluent Platform 8.x = Apache Kafka 4.x; testcontainers' KafkaContainer drives the
# /etc/confluent/docker scripts, so it needs a Confluent image.
DEFAULT_KAFKA_IMAGE = "confluentinc/cp-kafka:8.0.0"
DEFAULT_POSTGRES_IMAGE = "postgres:15"

KAFKA = "kafka"
POSTGRES = "postgres"
REDIS = "redis"

# Which fixtures need which resource (their transitive closure is in item.fixturenames).
RESOURCE_FIXTURES: dict[str, tuple[str, ...]] = {
    KAFKA: ("kafka_bootstrap_servers", "local_kafka"),
    POSTGRES: ("postgres", "local_postgres"),
    REDIS: ("redis", "local_redis"),
}


class Unavailable(Exception):
    """The resource cannot be provided on this machine (tests skip with this reason)."""


@dataclass
class KafkaHandle:
    bootstrap_servers: str
    source: str  # "env" | "docker" | "local"
    local: LocalKafka | None = None
    close: Callable[[], None] = lambda: None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class PostgresHandle:
    params: PostgresParams
    source: str
    local: LocalPostgres | None = None
    close: Callable[[], None] = lambda: None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class RedisHandle:
    params: RedisParams
    source: str  # "env" | "local"
    local: LocalRedis | None = None
    close: Callable[[], None] = lambda: None
    timings: dict[str, float] = field(default_factory=dict)


def infra_mode() -> str:
    mode = os.environ.get(INFRA_ENV, "auto").strip().lower() or "auto"
    if mode not in ("auto", "local", "docker"):
        raise ValueError(f"{INFRA_ENV} must be auto, local or docker, not {mode!r}")
    return mode


_docker_lock = threading.Lock()
_docker_reason: list[str | None] = []


def docker_unavailable_reason() -> str | None:
    """None if a Docker engine answers a ping, else why not (cached)."""
    with _docker_lock:
        if not _docker_reason:
            try:
                import docker

                client = docker.from_env(timeout=5)
                try:
                    client.ping()
                finally:
                    client.close()
                _docker_reason.append(None)
            except Exception as exc:
                _docker_reason.append(f"no Docker engine ({type(exc).__name__}: {exc})"[:300])
        return _docker_reason[0]


def _use_docker() -> tuple[bool, str | None]:
    mode = infra_mode()
    if mode == "local":
        return False, f"{INFRA_ENV}=local"
    reason = docker_unavailable_reason()
    if reason and mode == "docker":
        raise Unavailable(f"{INFRA_ENV}=docker but {reason}")
    return reason is None, reason


# --------------------------------------------------------------------------- kafka


def _kafka_container_class() -> Any:
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from testcontainers.kafka import KafkaContainer  # type: ignore[no-redef]
    return KafkaContainer


def _start_kafka_container() -> KafkaHandle:
    t0 = time.monotonic()
    image = os.environ.get(KAFKA_IMAGE_ENV, DEFAULT_KAFKA_IMAGE)
    container = (
        _kafka_container_class()(image=image)
        .with_kraft()
        # testcontainers sets the offsets topic to RF 1 but not the transaction log.
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS", "1")
        .with_env("KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR", "1")
        .with_env("KAFKA_LOG_CLEANER_BACKOFF_MS", "1000")
    )
    container.start(timeout=180)
    return KafkaHandle(
        container.get_bootstrap_server(),
        "docker",
        close=container.stop,
        timings={"start_s": round(time.monotonic() - t0, 2)},
    )


def _start_local_kafka() -> KafkaHandle:
    kafka = LocalKafka()
    try:
        kafka.assemble()
    except ToolMissingError as exc:
        raise Unavailable(str(exc)) from None
    except InfraError as exc:  # typically: Maven Central not reachable
        raise Unavailable(f"cannot assemble the Kafka jars: {exc}"[:2000]) from None
    kafka.start(timeout=120)
    return KafkaHandle(
        kafka.bootstrap_servers, "local", local=kafka, close=kafka.close, timings=kafka.timings
    )


def provide_kafka() -> KafkaHandle:
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if env:
        return KafkaHandle(env, "env")
    docker_ok, why_not = _use_docker()
    if docker_ok:
        try:
            return _start_kafka_container()
        except Exception as exc:
            if infra_mode() == "docker":
                raise
            warnings.warn(f"Kafka container failed ({exc!r}); using LocalKafka", stacklevel=1)
    try:
        return _start_local_kafka()
    except Unavailable as exc:
        raise Unavailable(
            f"no Kafka: KAFKA_BOOTSTRAP_SERVERS unset; Docker: {why_not}; local: {exc}"
        ) from None


# --------------------------------------------------------------------------- postgres


def _postgres_from_env() -> PostgresHandle | None:
    host = os.environ.get("POSTGRES_HOST", "").strip()
    if not host:
        return None
    params = PostgresParams(
        host=host,
        port=int(os.environ.get("POSTGRES_PORT", "5432")),
        user=os.environ.get("POSTGRES_USER", "postgres"),
        password=os.environ.get("POSTGRES_PASSWORD", ""),
    )
    return PostgresHandle(params, "env")


def _start_postgres_container() -> PostgresHandle:
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from testcontainers.postgres import PostgresContainer  # type: ignore[no-redef]
    t0 = time.monotonic()
    image = os.environ.get(POSTGRES_IMAGE_ENV, DEFAULT_POSTGRES_IMAGE)
    container = PostgresContainer(
        image,
        username="booking",
        password="booking",
        dbname="booking",
        driver=None,
    )
    container.start()
    params = PostgresParams(
        host=container.get_container_host_ip(),
        port=int(container.get_exposed_port(5432)),
        user="booking",
        password="booking",
    )
    return PostgresHandle(
        params,
        "docker",
        close=container.stop,
        timings={"start_s": round(time.monotonic() - t0, 2)},
    )


def _start_local_postgres() -> PostgresHandle:
    pg = LocalPostgres()
    try:
        pg.ensure_installed()
    except ToolMissingError as exc:
        raise Unavailable(str(exc)) from None
    except InfraError as exc:  # apt-get failed
        raise Unavailable(f"cannot install PostgreSQL: {exc}"[:2000]) from None
    params = pg.start(timeout=120)
    return PostgresHandle(params, "local", local=pg, close=pg.close, timings=pg.timings)


def provide_postgres() -> PostgresHandle:
    from_env = _postgres_from_env()
    if from_env is not None:
        return from_env
    docker_ok, why_not = _use_docker()
    if docker_ok:
        try:
            return _start_postgres_container()
        except Exception as exc:
            if infra_mode() == "docker":
                raise
            warnings.warn(f"PostgreSQL container failed ({exc!r}); using LocalPostgres", stacklevel=1)
    try:
        return _start_local_postgres()
    except Unavailable as exc:
        raise Unavailable(f"no PostgreSQL: POSTGRES_HOST unset; Docker: {why_not}; local: {exc}") from None


# --------------------------------------------------------------------------- redis


def _redis_from_env() -> RedisHandle | None:
    url = os.environ.get("REDIS_URL", "").strip()
    if not url:
        return None
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url.removeprefix("async+"))
    params = RedisParams(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 6379,
        password=unquote(parts.password or ""),
        db=int(parts.path.strip("/") or 0),
    )
    return RedisHandle(params, "env")


def provide_redis() -> RedisHandle:
    from_env = _redis_from_env()
    if from_env is not None:
        return from_env
    redis = LocalRedis()
    try:
        redis.ensure_installed()
    except ToolMissingError as exc:
        raise Unavailable(f"no Redis: REDIS_URL unset; local: {exc}") from None
    except InfraError as exc:  # apt-get failed
        raise Unavailable(f"no Redis: cannot install redis-server: {exc}"[:2000]) from None
    params = redis.start(timeout=60)
    return RedisHandle(params, "local", local=redis, close=redis.close, timings=redis.timings)


# --------------------------------------------------------------------------- manager


PROVIDERS: dict[str, Callable[[], Any]] = {
    KAFKA: provide_kafka,
    POSTGRES: provide_postgres,
    REDIS: provide_redis,
}


class InfraManager:
    """Starts each resource at most once per session, in a background thread, on demand."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=len(PROVIDERS), thread_name_prefix="infra")
        self._futures: dict[str, Future[Any]] = {}
        self._requested_at: dict[str, float] = {}
        self.ready_after: dict[str, float] = {}
        self._closed = False

    def prestart(self, names: set[str]) -> None:
        for name in sorted(names):
            self._future(name)

    def _future(self, name: str) -> Future[Any]:
        with self._lock:
            fut = self._futures.get(name)
            if fut is None:
                self._requested_at[name] = time.monotonic()

                def run() -> Any:
                    handle = PROVIDERS[name]()
                    self.ready_after[name] = round(time.monotonic() - self._requested_at[name], 2)
                    return handle

                fut = self._futures[name] = self._pool.submit(run)
            return fut

    def get(self, name: str, timeout: float = 900) -> Any:
        """The handle (waits for the start); raises Unavailable or the start error."""
        return self._future(name).result(timeout=timeout)

    def started(self) -> dict[str, Any]:
        """Handles of the resources that did start (no waiting for unfinished ones)."""
        out = {}
        for name, fut in self._futures.items():
            if fut.done() and fut.exception() is None:
                out[name] = fut.result()
        return out

    def close(self) -> None:
        """Stop everything, concurrently; waits for starts still in progress first.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        handles = []
        for fut in list(self._futures.values()):
            with contextlib.suppress(Exception):
                handles.append(fut.result(timeout=900))
        closers = [threading.Thread(target=h.close) for h in handles]
        for t in closers:
            t.start()
        for t in closers:
            t.join(timeout=60)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def summary_lines(self) -> list[str]:
        lines = []
        for name, fut in sorted(self._futures.items()):
            if not fut.done():
                lines.append(f"{name}: still starting")
                continue
            exc = fut.exception()
            if exc is not None:
                lines.append(f"{name}: unavailable - {str(exc).splitlines()[0][:200]}")
                continue
            h = fut.result()
            where = h.bootstrap_servers if name == KAFKA else f"{h.params.host}:{h.params.port}"
            timing = " ".join(f"{k}={v}" for k, v in h.timings.items() if v is not None and k != "launch_s")
            ready = self.ready_after.get(name)
            lines.append(f"{name}: {h.source} {where}  ready after {ready}s  [{timing}]")
        return lines


def require_infra() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip() not in ("", "0", "false", "no")
