"""Settings shared by the three services, read from the environment (12-factor).

Each service subclasses `ServiceSettings` for what only it needs. Names are plain upper-case
variables (KAFKA_BOOTSTRAP_SERVERS, STORE, DATA_DIR, POSTGRES_HOST, HTTP_PORT, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from backbone.signing import BusKeys

StoreKind = Literal["sqlite", "postgres", "memory"]


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
    aggregate_cache_size: int = 10_000

    def views_url(self, service: str) -> str:
        """SQLAlchemy URL of the service's read models (its derived, rebuildable state)."""
        if self.kind == "postgres":
            password = self.postgres_password.get_secret_value()
            return (
                f"postgresql+psycopg://{self.postgres_user}:{password}@{self.postgres_host}:"
                f"{self.postgres_port}/{self.postgres_dbname or service}"
            )
        if self.kind == "memory":
            return "sqlite+pysqlite:///:memory:"
        return f"sqlite+pysqlite:///{Path(self.data_dir) / f'{service}-views.sqlite3'}"

    def vault_url(self, service: str) -> str:
        """Where the service's subject keys live (see backbone.personal): never in the event
        store, because deleting a key must really delete it."""
        if self.kind == "sqlite":
            return f"sqlite+pysqlite:///{Path(self.data_dir) / f'{service}-keys.sqlite3'}"
        return self.views_url(service)


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    topic_namespace: str = Field(
        default="",
        pattern=r"^[a-z0-9-]*$",
        description="Prefix of every topic and consumer group: several deployments (or test "
        "runs) can share one Kafka cluster without seeing each other's messages.",
    )
    topic_partitions: int = Field(default=3, ge=1, le=64)
    topic_replication_factor: int = Field(default=1, ge=1, le=5)
    subject_keys_segment_ms: int = Field(
        default=3_600_000,
        ge=100,
        description="Segment age of the compacted subject-keys topics: an erased key leaves Kafka "
        "within about this long (the log cleaner only compacts closed segments).",
    )
    consumer_batch_size: int = Field(default=500, ge=1, le=10_000)
    relay_batch_size: int = Field(default=500, ge=1, le=10_000)

    store: StoreKind = "sqlite"
    data_dir: Path = Path(".local/data")
    postgres_host: str = "127.0.0.1"
    postgres_port: int = 5432
    postgres_user: str = "postgres"
    postgres_password: SecretStr = SecretStr("")
    postgres_dbname: str | None = None
    postgres_schema: str | None = None

    http_host: str = "127.0.0.1"
    http_port: int = 8000

    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"

    audit_api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token of the read-only audit API (/v1/audit/...); unset, it answers 401.",
    )

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
        )
