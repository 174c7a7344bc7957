"""Kafka TLS and SASL settings from the environment, turned into what each client takes: the
services' bus (faststream's security objects), the admin client and the operator tool
(aiokafka's options). Against a real broker: tests/integration when one runs with SASL."""

from __future__ import annotations

import asyncio
import ssl

import pytest
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from pydantic import ValidationError

from backbone import bus
from backbone.kafkasecurity import KafkaCluster
from ops import registry
from ops.config import Deployment, OpsError
from ops.kafka import Kafka
from services.bookings.settings import BookingsSettings
from tests.support.certs import LocalCA


def self_signed(tmp_path, name: str = "test-ca"):
    """A CA certificate and its key as PEM files (also usable as a client certificate)."""
    ca = LocalCA(tmp_path, name)
    return ca.ca_file, ca.key_file


def settings(**env) -> BookingsSettings:
    return BookingsSettings(session_public_key_file="/k.pem", **{k.lower(): v for k, v in env.items()})


def test_plaintext_by_default_nothing_is_added():
    security = settings().kafka_security()
    assert security.for_faststream() is None and security.for_aiokafka() == {}


@pytest.mark.parametrize(
    ("mechanism", "kind"),
    [("PLAIN", SASLPlaintext), ("SCRAM-SHA-256", SASLScram256), ("SCRAM-SHA-512", SASLScram512)],
)
def test_sasl_over_tls_with_the_deployments_ca(tmp_path, mechanism, kind):
    ca, _ = self_signed(tmp_path)
    security = settings(
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_MECHANISM=mechanism,
        KAFKA_SASL_USERNAME="bookings",
        KAFKA_SASL_PASSWORD="s3cret:/@",
        KAFKA_SSL_CA_FILE=str(ca),
    ).kafka_security()
    found = security.for_faststream()
    assert type(found) is kind and found.use_ssl
    assert (found.username, found.password) == ("bookings", "s3cret:/@")
    context = found.ssl_context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "test-ca"),),)]
    options = security.for_aiokafka()
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == mechanism
    assert options["sasl_plain_username"] == "bookings" and options["sasl_plain_password"] == "s3cret:/@"
    assert options["ssl_context"] is not None


def test_sasl_without_tls_and_tls_without_sasl(tmp_path):
    scram = settings(
        KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        KAFKA_SASL_USERNAME="u",
        KAFKA_SASL_PASSWORD="p",
    ).kafka_security()
    assert (
        not scram.for_faststream().use_ssl and scram.for_aiokafka()["security_protocol"] == "SASL_PLAINTEXT"
    )
    cert, key = self_signed(tmp_path, "client")
    tls = settings(
        KAFKA_SECURITY_PROTOCOL="SSL",
        KAFKA_SSL_CERT_FILE=str(cert),
        KAFKA_SSL_KEY_FILE=str(key),
        KAFKA_SSL_CHECK_HOSTNAME="false",
    ).kafka_security()
    found = tls.for_faststream()
    assert type(found) is BaseSecurity and found.use_ssl and not found.ssl_context.check_hostname
    assert tls.for_aiokafka()["security_protocol"] == "SSL"


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs KAFKA_SASL_MECHANISM"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN"},
            "needs KAFKA_SASL_USERNAME",
        ),
        ({"KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u"}, "uses no SASL"),
        ({"KAFKA_SSL_CA_FILE": "/ca.pem"}, "uses no TLS"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERT_FILE": "/c.pem"}, "go together"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "GSSAPI"}, "kafka_sasl_mechanism"),
    ],
)
def test_settings_that_do_not_fit_together_stop_the_start_with_their_names(env, says):
    with pytest.raises(ValidationError, match=says):
        settings(**env)


def test_a_missing_ca_file_is_named_when_the_clients_are_made(tmp_path):
    security = settings(
        KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_CA_FILE=str(tmp_path / "nope.pem")
    ).kafka_security()
    with pytest.raises(ValueError, match="Kafka TLS files"):
        security.for_faststream()


def test_the_bus_the_admin_client_and_the_operator_tool_take_the_same_settings(tmp_path):
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9093",
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "ops",
        "KAFKA_SASL_PASSWORD": "pw",
    }
    security = settings(**env).kafka_security()
    broker = bus.make_broker("kafka-1:9093", "bookings", security=security)
    assert {k: broker._connection_kwargs[k] for k in ("security_protocol", "sasl_mechanism")} == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
    }
    # The operator tool: from its config file, through the service's own settings.
    deployment = Deployment(common={**env, "SESSION_PUBLIC_KEY_FILE": "/k.pem", "DATA_DIR": str(tmp_path)})
    cluster = deployment.settings("bookings", registry.settings_class("bookings")).kafka_cluster()
    assert cluster == KafkaCluster("kafka-1:9093", security) and str(cluster) == "kafka-1:9093"

    async def clients():
        kafka = Kafka(cluster)  # its consumer and admin client, not started
        return kafka.consumer._client, kafka.admin._client

    for client in asyncio.run(clients()):
        assert (client._security_protocol, client._sasl_mechanism) == ("SASL_PLAINTEXT", "SCRAM-SHA-512")
        assert client._sasl_plain_username == "ops"


def test_the_operator_tool_says_which_kafka_settings_do_not_fit(tmp_path):
    deployment = Deployment(
        common={
            "SESSION_PUBLIC_KEY_FILE": "/k.pem",
            "DATA_DIR": str(tmp_path),
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        }
    )
    with pytest.raises(OpsError, match="needs KAFKA_SASL_MECHANISM"):
        registry.build("bookings", deployment)
