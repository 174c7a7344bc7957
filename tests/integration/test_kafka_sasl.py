"""The services' Kafka clients against a broker that authenticates them (SASL_PLAINTEXT,
SCRAM-SHA-512 and PLAIN, users created when LocalKafka formats it): the bus, the admin client
that creates topics, and the operator tool, all from the same settings. A wrong password and
a client without SASL are refused."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from pydantic import SecretStr

from backbone import bus
from backbone.kafkasecurity import KafkaCluster, KafkaSecurity
from deploy.local.kafka import LocalKafka
from ops.config import OpsError
from ops.kafka import Kafka, producer
from tests.support.certs import LocalCA

pytestmark = pytest.mark.integration

USER, PASSWORD = "bookings", "bookings-secret"


@pytest.fixture(scope="module")
def sasl_kafka():
    kafka = LocalKafka(sasl_users={USER: PASSWORD})
    kafka.start(timeout=120)
    yield kafka
    kafka.close()


def security(mechanism: str, password: str = PASSWORD) -> KafkaSecurity:
    return KafkaSecurity(
        protocol="SASL_PLAINTEXT",
        sasl_mechanism=mechanism,
        sasl_username=USER,
        sasl_password=SecretStr(password),
    )


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_the_bus_the_admin_client_and_the_operator_tool_authenticate(sasl_kafka, mechanism):
    servers, secured = sasl_kafka.sasl_bootstrap_servers, security(mechanism)
    topic = f"sasl-{uuid.uuid4().hex[:8]}"

    async def go() -> tuple[list, dict]:
        await bus.ensure_topics(servers, [topic], partitions=2, security=secured)
        broker = bus.make_broker(servers, client_id="bookings", security=secured)
        await broker.start()
        try:
            await bus.send(broker, [bus.Record(topic=topic, value=b"{}", key=b"k", headers={})])
        finally:
            await broker.stop()
        async with producer(KafkaCluster(servers, secured)) as tool:
            await bus.send(tool, [bus.Record(topic=topic, value=b"{}", key=b"k", headers={})])
        async with Kafka(KafkaCluster(servers, secured)) as kafka:
            partitions = kafka.partitions(topic)
            return partitions, await kafka.ends(partitions)

    partitions, ends = asyncio.run(go())
    assert len(partitions) == 2 and sum(ends.values()) == 2


def test_a_wrong_password_or_no_sasl_is_refused(sasl_kafka):
    servers = sasl_kafka.sasl_bootstrap_servers

    async def look(cluster: KafkaCluster) -> None:
        async with Kafka(cluster):
            pass

    with pytest.raises(OpsError, match=f"cannot reach Kafka at {servers}"):
        asyncio.run(look(KafkaCluster(servers, security("SCRAM-SHA-512", "not-the-password"))))
    with pytest.raises(OpsError, match=f"cannot reach Kafka at {servers}"):
        asyncio.run(look(KafkaCluster(servers)))


@pytest.fixture(scope="module")
def sasl_ssl_kafka(tmp_path_factory):
    ca = LocalCA(tmp_path_factory.mktemp("kafka-tls"))
    kafka = LocalKafka(sasl_users={USER: PASSWORD}, tls=ca.server("broker"))
    kafka.start(timeout=120)
    yield kafka, ca
    kafka.close()


def test_over_tls_the_brokers_certificate_is_verified_with_the_deployments_ca(sasl_ssl_kafka, tmp_path):
    """SASL_SSL, SCRAM-SHA-512: the clients reach the broker with KAFKA_SSL_CA_FILE, and are
    refused by a broker whose certificate another CA signed."""
    kafka, ca = sasl_ssl_kafka
    servers, topic = kafka.sasl_bootstrap_servers, f"tls-{uuid.uuid4().hex[:8]}"

    def secured(ca_file) -> KafkaSecurity:
        return KafkaSecurity(
            protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username=USER,
            sasl_password=SecretStr(PASSWORD),
            ssl_ca_file=ca_file,
        )

    async def go(security: KafkaSecurity) -> int:
        await bus.ensure_topics(servers, [topic], partitions=1, security=security)
        async with producer(KafkaCluster(servers, security)) as tool:
            await bus.send(tool, [bus.Record(topic=topic, value=b"{}", key=b"k", headers={})])
        async with Kafka(KafkaCluster(servers, security)) as look:
            return sum((await look.ends(look.partitions(topic))).values())

    assert asyncio.run(go(secured(ca.ca_file))) == 1
    stranger = LocalCA(tmp_path, "another-ca")

    async def look(security: KafkaSecurity) -> None:
        async with Kafka(KafkaCluster(servers, security)):
            pass

    with pytest.raises(OpsError, match=f"cannot reach Kafka at {servers}"):
        asyncio.run(look(secured(stranger.ca_file)))
