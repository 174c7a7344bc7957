"""The local broker secured as a production cluster would be: SASL_SSL, and ACLs.

    secured = SecuredKafka(work_dir, namespace="")   # CA and broker certificate (openssl),
    secured.start()                                  # a password per principal, the broker,
    env = secured.env("bookings")                    # the ACLs; KAFKA_* for one principal
    secured.close()

One principal per service (accounts, bookings, notifier), one for command publishers
(`booking-publisher`) and one for the operator tool (`booking-ops`), with exactly the ACLs
`backbone.kafkaacl.derived` gives them (from `contracts.topics.rights`), and a super user
(`admin`) for creating those ACLs (and for tests that must look at everything). Clients reach
it only over SASL_SSL (SCRAM-SHA-512 or PLAIN), verifying the broker's certificate with the
CA made here (`ca_file`).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from backbone import kafkaacl
from backbone.kafkasecurity import KafkaCluster, KafkaSecurity
from contracts.topics import rights
from deploy.local._proc import write_private
from deploy.local.kafka import LocalKafka
from deploy.local.tls import OpensslCA

SUPER_USER = "admin"


class SecuredKafka:
    def __init__(
        self,
        work_dir: Path,
        namespace: str = "",
        persistent: bool = False,
        ports: tuple[int, int, int] = (0, 0, 0),
    ):
        """`ports`: the broker's own listener, the controller's, and the clients' (SASL_SSL);
        0: a free one. `persistent`: keep (and reuse) the data, CA, certificate and passwords."""
        self.work_dir = Path(work_dir)
        self.namespace = namespace
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.ca = OpensslCA(self.work_dir / "tls")
        secrets_file = self.work_dir / "kafka-users.json"
        if persistent and secrets_file.exists():
            self.passwords: dict[str, str] = json.loads(secrets_file.read_text())
        else:
            self.passwords = {name: secrets.token_urlsafe(24) for name in (SUPER_USER, *rights())}
            write_private(secrets_file, json.dumps(self.passwords, indent=2))
        broker = self.work_dir / "tls" / "broker.pem"
        tls = (
            (broker, broker.with_suffix(".key"))
            if persistent and broker.exists()
            else self.ca.server("broker")
        )
        self.kafka = LocalKafka(
            work_dir=self.work_dir / "kafka",
            persistent=persistent,
            sasl_users=self.passwords,
            tls=tls,
            super_user=SUPER_USER,
            broker_port=ports[0],
            controller_port=ports[1],
            sasl_port=ports[2],
        )

    def topic(self, name: str) -> str:
        return f"{self.namespace}.{name}" if self.namespace else name

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka.sasl_bootstrap_servers

    def start(self, timeout: float = 120) -> SecuredKafka:
        self.kafka.start(timeout=timeout)
        self.grant([acl for acls in kafkaacl.derived(self.topic).values() for acl in acls])
        return self

    def security(self, principal: str, mechanism: str = "SCRAM-SHA-512") -> KafkaSecurity:
        return KafkaSecurity(
            protocol="SASL_SSL",
            sasl_mechanism=mechanism,  # type: ignore[arg-type]
            sasl_username=principal,
            sasl_password=SecretStr(self.passwords[principal]),
            ssl_ca_file=self.ca.ca_file,
        )

    def cluster(self, principal: str) -> KafkaCluster:
        return KafkaCluster(self.bootstrap_servers, self.security(principal))

    def env(self, principal: str) -> dict[str, str]:
        """The settings of a client that is `principal` (the services' KAFKA_* variables)."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": principal,
            "KAFKA_SASL_PASSWORD": self.passwords[principal],
            "KAFKA_SSL_CA_FILE": str(self.ca.ca_file),
        }

    def grant(self, acls: list[kafkaacl.Acl]) -> None:
        """Create ACLs, as the super user."""
        asyncio.run(self._as_super_user(kafkaacl.create, acls))

    def revoke(self, acls: list[kafkaacl.Acl]) -> None:
        """Delete ACLs, as the super user."""
        asyncio.run(self._as_super_user(kafkaacl.delete, acls))

    async def _as_super_user(self, action: Any, acls: list[kafkaacl.Acl]) -> None:
        from aiokafka.client import AIOKafkaClient

        client = AIOKafkaClient(
            bootstrap_servers=self.bootstrap_servers, **self.security(SUPER_USER).for_aiokafka()
        )
        await client.bootstrap()
        try:
            await action(client, acls)
        finally:
            await client.close()

    def close(self) -> None:
        self.kafka.close()
