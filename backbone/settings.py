"""Settings shared by the three services, read from the environment (12-factor).

Each service subclasses `ServiceSettings` for what only it needs. Names are plain upper-case
variables (KAFKA_BOOTSTRAP_SERVERS, STORE, DATA_DIR, POSTGRES_HOST, HTTP_PORT, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from backbone.kafkasecurity import KafkaCluster, KafkaSecurity, Mechanism, Protocol
from backbone.signing import BusKeys

StoreKind = Literal["sqlite", "postgres", "memory"]


SSLMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]

POSTGRES_NAME_BYTES = 63  # PostgreSQL cuts longer names short: two services' could then be one


def postgres_database(setting: str | None, service: str) -> str:
    """The PostgreSQL database of one service, by the rule of `POSTGRES_DBNAME`:

    * unset (or empty): the service's name (`accounts`, `bookings`, `notifier`);
    * a name: a prefix, `POSTGRES_DBNAME=booking` -> `booking_accounts`, `booking_bookings`, ...;
    * `service=database` pairs, comma-separated: each service's database, named outright
      (`accounts=acc,bookings=bk,notifier=nt`). A service the mapping does not name does not
      start (ValueError); a mapping that names only the service it is given to is how one
      service is pointed at a database of any name.

    So one value set for every service never puts them in one database; only a mapping can,
    and even then each keeps its own keys (`backbone.personal`: the vault's rows are per service).
    """
    setting = (setting or "").strip()
    if not setting:
        name = service
    elif "=" not in setting:
        name = f"{setting}_{service}"
    else:
        mapping = parse_database_mapping(setting)
        if service not in mapping:
            raise ValueError(
                f"POSTGRES_DBNAME={setting!r} names the databases of {', '.join(sorted(mapping))} "
                f"but not of {service}: add {service}=<database>, or give a prefix instead"
            )
        name = mapping[service]
    if len(name.encode()) > POSTGRES_NAME_BYTES:
        raise ValueError(
            f"the database of {service}, {name!r}, is longer than PostgreSQL's {POSTGRES_NAME_BYTES} "
            "bytes (POSTGRES_DBNAME): shorten the prefix"
        )
    return name


def parse_database_mapping(setting: str) -> dict[str, str]:
    """`accounts=a, bookings=b` as {service: database}; ValueError naming what is wrong."""
    mapping: dict[str, str] = {}
    for entry in setting.split(","):
        service, equals, database = (part.strip() for part in entry.partition("="))
        if not equals or not service or not database or "=" in database:
            raise ValueError(
                f"POSTGRES_DBNAME={setting!r}: {entry.strip()!r} is not service=database "
                "(a mapping is `accounts=a,bookings=b,notifier=c`; a plain name is a prefix)"
            )
        if service in mapping:
            raise ValueError(f"POSTGRES_DBNAME={setting!r} names the database of {service} twice")
        mapping[service] = database
    return mapping


@dataclass(frozen=True)
class StoreSettings:
    kind: StoreKind = "sqlite"
    data_dir: Path = Path(".local/data")
    postgres_host: str = "127.0.0.1"
    postgres_port: int = 5432
    postgres_user: str = "postgres"
    postgres_password: SecretStr = field(default_factory=lambda: SecretStr(""))
    postgres_dbname: str | None = None
    postgres_schema: str | None = None
    postgres_sslmode: SSLMode | None = None
    postgres_sslrootcert: Path | None = None
    postgres_sslcert: Path | None = None
    postgres_sslkey: Path | None = None
    postgres_pool_size: int = 5
    postgres_max_overflow: int = 5
    aggregate_cache_size: int = 10_000

    def postgres_tls(self) -> dict[str, str]:
        """libpq's TLS parameters that are set (sslmode, sslrootcert, sslcert, sslkey): every
        connection of the service to PostgreSQL takes them (event store, read models, vault)."""
        given = {
            "sslmode": self.postgres_sslmode,
            "sslrootcert": self.postgres_sslrootcert,
            "sslcert": self.postgres_sslcert,
            "sslkey": self.postgres_sslkey,
        }
        return {name: str(value) for name, value in given.items() if value is not None}

    def postgres_database(self, service: str) -> str:
        """The service's PostgreSQL database (event store, read models, vault): see
        `postgres_database` for the rule of `POSTGRES_DBNAME`."""
        return postgres_database(self.postgres_dbname, service)

    def views_url(self, service: str) -> str:
        """SQLAlchemy URL of the service's read models (its derived, rebuildable state)."""
        if self.kind == "postgres":
            pool = {
                "pool_size": str(self.postgres_pool_size),
                "max_overflow": str(self.postgres_max_overflow),
            }
            return self._postgres_url(service, pool)
        if self.kind == "memory":
            return "sqlite+pysqlite:///:memory:"
        return f"sqlite+pysqlite:///{Path(self.data_dir) / f'{service}-views.sqlite3'}"

    def vault_url(self, service: str) -> str:
        """Where the service's subject keys live (see backbone.personal): never in the event
        store, because deleting a key must really delete it. (In PostgreSQL: the service's
        database, with the vault's own small pool.)"""
        if self.kind == "sqlite":
            return f"sqlite+pysqlite:///{Path(self.data_dir) / f'{service}-keys.sqlite3'}"
        if self.kind == "postgres":
            return self._postgres_url(service, {})
        return self.views_url(service)

    def _postgres_url(self, service: str, pool: dict[str, str]) -> str:
        # Built, not formatted: a password with '@', ':' or '/' is escaped. `pool_size` and
        # `max_overflow` are read (and removed) by the engines (backbone/sqltypes.py).
        url = sa.engine.URL.create(
            "postgresql+psycopg",
            username=self.postgres_user,
            password=self.postgres_password.get_secret_value(),
            host=self.postgres_host,
            port=self.postgres_port,
            database=self.postgres_database(service),
            query={**self.postgres_tls(), **pool},
        )
        return url.render_as_string(hide_password=False)


MIN_TOKEN_LENGTH = 32  # operator tokens (admin, audit): e.g. `openssl rand -base64 32`


def long_enough(token: SecretStr | None, name: str) -> SecretStr | None:
    """Refuse to start with a guessable operator token (empty means unset: the API is off)."""
    if token is not None and 0 < len(token.get_secret_value()) < MIN_TOKEN_LENGTH:
        raise ValueError(f"{name} must be at least {MIN_TOKEN_LENGTH} characters (or unset)")
    return token


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # A secured cluster (backbone/kafkasecurity.py): TLS, SASL, or both.
    kafka_security_protocol: Protocol = "PLAINTEXT"
    kafka_sasl_mechanism: Mechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_file: Path | None = Field(default=None, description="CA bundle (default: the system's).")
    kafka_ssl_cert_file: Path | None = Field(default=None, description="Client certificate (mTLS).")
    kafka_ssl_key_file: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_ssl_check_hostname: bool = True
    topic_namespace: str = Field(
        default="",
        pattern=r"^[a-z0-9-]*$",
        description="Prefix of every topic and consumer group: several deployments (or test "
        "runs) can share one Kafka cluster without seeing each other's messages.",
    )
    topic_auto_create: bool = Field(
        default=True,
        description="Create missing topics at start (and set the dead letters' retention). "
        "false, for clusters whose topics are managed elsewhere (Strimzi KafkaTopics, "
        "`booking-accounts topics create`): the service only checks that its topics exist, and "
        "stops at start naming any that is missing.",
    )
    topic_partitions: int = Field(default=3, ge=1, le=64)
    topic_replication_factor: int = Field(default=1, ge=1, le=5)
    topic_retention_ms: int | None = Field(
        default=None,
        ge=60_000,
        description="retention.ms of the events, commands and outcomes topics a service creates "
        "(unset: the cluster's default). Each service's store keeps its events for good; the "
        "topics only need to outlast the longest a consumer may be stopped.",
    )
    topic_min_insync_replicas: int | None = Field(
        default=None, ge=1, le=5, description="min.insync.replicas of every topic (unset: the cluster's)."
    )
    subject_keys_segment_ms: int = Field(
        default=3_600_000,
        ge=100,
        description="Segment age of the compacted subject-keys topics: an erased key leaves Kafka "
        "within about this long (the log cleaner only compacts closed segments).",
    )
    dead_letter_retention_ms: int = Field(
        default=7 * 24 * 3_600_000,
        ge=60_000,
        description="How long a dead-letter topic keeps a letter (its retention.ms, set at every "
        "start): dead letters are raw messages that an erasure cannot reach.",
    )
    consumer_batch_size: int = Field(default=500, ge=1, le=10_000)
    relay_batch_size: int = Field(default=500, ge=1, le=10_000)

    store: StoreKind = "sqlite"
    data_dir: Path = Path(".local/data")
    postgres_host: str = "127.0.0.1"
    postgres_port: int = 5432
    postgres_user: str = "postgres"
    postgres_password: SecretStr = SecretStr("")
    postgres_dbname: str | None = Field(
        default=None,
        description="The services' databases: unset, each service's name; a name, a prefix "
        "(`booking` -> booking_accounts, booking_bookings, booking_notifier); or a mapping "
        "(`accounts=a,bookings=b,notifier=c`). See backbone.settings.postgres_database.",
    )
    postgres_schema: str | None = None
    postgres_sslmode: SSLMode | None = Field(
        default=None, description="libpq's sslmode (verify-full to check the server's certificate and name)."
    )
    postgres_sslrootcert: Path | None = Field(
        default=None, description="CA the server's certificate is checked with."
    )
    postgres_sslcert: Path | None = Field(
        default=None, description="Client certificate, if the server asks for one."
    )
    postgres_sslkey: Path | None = None
    postgres_pool_size: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Connections kept by each pool: the event store's and the read models'.",
    )
    postgres_max_overflow: int = Field(
        default=5, ge=0, le=100, description="Connections a pool may open beyond."
    )

    http_host: str = "127.0.0.1"
    http_port: int = 8000

    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"
    tracing: Literal["off", "otlp", "console"] = Field(
        default="off",
        description="OpenTelemetry traces (backbone/tracing.py): otlp exports to the collector at "
        "OTEL_EXPORTER_OTLP_ENDPOINT (http/protobuf). The standard OTEL_TRACES_EXPORTER, or an "
        "OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, turns it on too; OTEL_SDK_DISABLED=true turns it off.",
    )
    lag_interval_seconds: float = Field(
        default=5.0, gt=0, description="How often the lag gauges are measured (whatever the consumers do)."
    )
    gil_switch_interval_ms: float = Field(
        default=5.0,
        gt=0,
        le=100,
        description="How long a thread may hold Python's GIL while another waits for it "
        "(`sys.setswitchinterval`; 5 ms, Python's default). The event loop gives the GIL up at "
        "every socket read and write and SQLite statement, and then waits up to this long for it "
        "behind the worker threads (`backbone.runtime.serve`). 1 ms was tried for issue 10 goal 3 "
        "and not shown to help on the shared VM (docs/performance.md): left at Python's default.",
    )

    audit_api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token of the read-only audit API (/v1/audit/...); unset, it answers 401.",
    )

    @field_validator("audit_api_token")
    @classmethod
    def _audit_token_long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        return long_enough(token, "AUDIT_API_TOKEN")

    @field_validator("postgres_dbname")
    @classmethod
    def _database_rule(cls, setting: str | None) -> str | None:
        if setting and "=" in setting:
            parse_database_mapping(setting)  # a mapping that cannot be read fails at start
        return setting

    @model_validator(mode="after")
    def _kafka_security_fits(self) -> ServiceSettings:
        self.kafka_security()  # raises ValueError, naming the settings that do not fit together
        return self

    def kafka_security(self) -> KafkaSecurity:
        return KafkaSecurity(
            protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_password,
            ssl_ca_file=self.kafka_ssl_ca_file,
            ssl_cert_file=self.kafka_ssl_cert_file,
            ssl_key_file=self.kafka_ssl_key_file,
            ssl_key_password=self.kafka_ssl_key_password,
            ssl_check_hostname=self.kafka_ssl_check_hostname,
        )

    def kafka_cluster(self) -> KafkaCluster:
        return KafkaCluster(self.kafka_bootstrap_servers, self.kafka_security())

    bus_key_file: Path | None = Field(
        default=None,
        description="This service's private bus key (Ed25519): it signs everything the service "
        "publishes and opens the subject keys sealed for it (`python -m deploy.keys`).",
    )
    bus_trusted_keys_dir: Path | None = Field(
        default=None,
        description="The public bus keys of every service (`<service>.<key id>.pub`), several "
        "per service while one is rotated.",
    )
    subject_key_patience_seconds: float = Field(
        default=120.0,
        gt=0,
        description="How long a message waits for the key of its subject before it is "
        "dead-lettered (reason unknown_subject).",
    )

    def bus_keys(self, service: str, lookup: Any = None, accept_unsigned_commands: bool = False) -> BusKeys:
        """The service's bus keys (backbone.signing); KeyFileMissing if they are not there."""
        return BusKeys.load(
            service,
            self.bus_key_file,
            self.bus_trusted_keys_dir,
            self.topic,
            lookup,
            accept_unsigned_commands,
        )

    def topic(self, name: str) -> str:
        """The real name of a topic (or consumer group) of the contracts in this deployment."""
        return f"{self.topic_namespace}.{name}" if self.topic_namespace else name

    def store_settings(self) -> StoreSettings:
        return StoreSettings(
            kind=self.store,
            data_dir=self.data_dir,
            postgres_host=self.postgres_host,
            postgres_port=self.postgres_port,
            postgres_user=self.postgres_user,
            postgres_password=self.postgres_password,
            postgres_dbname=self.postgres_dbname,
            postgres_schema=self.postgres_schema,
            postgres_sslmode=self.postgres_sslmode,
            postgres_sslrootcert=self.postgres_sslrootcert,
            postgres_sslcert=self.postgres_sslcert,
            postgres_sslkey=self.postgres_sslkey,
            postgres_pool_size=self.postgres_pool_size,
            postgres_max_overflow=self.postgres_max_overflow,
        )
