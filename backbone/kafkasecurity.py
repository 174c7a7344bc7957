"""How the services, their admin client and the operator tool reach a secured Kafka cluster.

The settings (`KAFKA_SECURITY_PROTOCOL`, `KAFKA_SASL_*`, `KAFKA_SSL_*`, see
`backbone.settings`) become one `KafkaSecurity`, which gives each client what it takes:

* faststream's security object (`BaseSecurity`, `SASLPlaintext`, `SASLScram256`,
  `SASLScram512`) for the bus (`KafkaBroker(security=...)`);
* aiokafka's options (`security_protocol`, `ssl_context`, `sasl_*`) for the admin client and
  the operator tool's consumer, derived from that same object by faststream's own
  `parse_security`, so that the bus and the other clients cannot disagree.

TLS always verifies the broker's certificate (against `KAFKA_SSL_CA_FILE`, else the system's
CAs) and, unless `KAFKA_SSL_CHECK_HOSTNAME=false`, its host name. A client certificate
(`KAFKA_SSL_CERT_FILE` and `KAFKA_SSL_KEY_FILE`) is for clusters that authenticate by mTLS.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: Protocol = "PLAINTEXT"
    sasl_mechanism: Mechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_file: Path | None = None
    ssl_cert_file: Path | None = None
    ssl_key_file: Path | None = None
    ssl_key_password: SecretStr | None = None
    ssl_check_hostname: bool = True

    def __post_init__(self) -> None:
        if problem := self.problem():
            raise ValueError(problem)

    def problem(self) -> str | None:
        """What makes these settings unusable together, or None."""
        if self.sasl:
            if self.sasl_mechanism is None:
                return f"KAFKA_SECURITY_PROTOCOL={self.protocol} needs KAFKA_SASL_MECHANISM"
            if not self.sasl_username or self.sasl_password is None:
                return (
                    f"KAFKA_SECURITY_PROTOCOL={self.protocol} needs KAFKA_SASL_USERNAME and "
                    "KAFKA_SASL_PASSWORD"
                )
        elif self.sasl_mechanism or self.sasl_username:
            return f"KAFKA_SASL_* is set, but KAFKA_SECURITY_PROTOCOL={self.protocol} uses no SASL"
        if not self.tls and (self.ssl_ca_file or self.ssl_cert_file or self.ssl_key_file):
            return f"KAFKA_SSL_* is set, but KAFKA_SECURITY_PROTOCOL={self.protocol} uses no TLS"
        if bool(self.ssl_cert_file) != bool(self.ssl_key_file):
            return "KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE go together"
        return None

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of every client (None without TLS). Reads the files now, so that a
        missing or unreadable one stops the start with its name."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=str(self.ssl_ca_file) if self.ssl_ca_file else None)
            if self.ssl_cert_file and self.ssl_key_file:
                context.load_cert_chain(
                    str(self.ssl_cert_file),
                    str(self.ssl_key_file),
                    self.ssl_key_password.get_secret_value() if self.ssl_key_password else None,
                )
        except (OSError, ssl.SSLError) as error:
            raise ValueError(f"Kafka TLS files: {error}") from error
        context.check_hostname = self.ssl_check_hostname
        return context

    def for_faststream(self) -> Any:
        """faststream's security object for `KafkaBroker(security=...)` (None: plaintext)."""
        from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

        if self.protocol == "PLAINTEXT":
            return None
        context = self.ssl_context()
        if not self.sasl:
            return BaseSecurity(ssl_context=context, use_ssl=True)
        kind = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}
        assert self.sasl_mechanism is not None and self.sasl_username and self.sasl_password is not None
        return kind[self.sasl_mechanism](
            username=self.sasl_username,
            password=self.sasl_password.get_secret_value(),
            ssl_context=context,
            use_ssl=self.tls,
        )

    def for_aiokafka(self) -> dict[str, Any]:
        """Options for aiokafka's clients (`AIOKafkaAdminClient(**...)`, consumers)."""
        from faststream.kafka.security import parse_security

        return parse_security(self.for_faststream())


PLAINTEXT = KafkaSecurity()


@dataclass(frozen=True)
class KafkaCluster:
    """Where a service's Kafka is and how to reach it; prints as its bootstrap servers."""

    bootstrap_servers: str
    security: KafkaSecurity = PLAINTEXT

    def __str__(self) -> str:
        return self.bootstrap_servers
