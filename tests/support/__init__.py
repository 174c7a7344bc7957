"""Test support: where Kafka / PostgreSQL / SMTP come from (see ``infra.py``) and helpers."""

from tests.support.infra import (
    InfraManager,
    KafkaHandle,
    PostgresHandle,
    Unavailable,
    provide_kafka,
    provide_postgres,
)

__all__ = [
    "InfraManager",
    "KafkaHandle",
    "PostgresHandle",
    "Unavailable",
    "provide_kafka",
    "provide_postgres",
]
