"""The Kubernetes manifests (deploy/k8s) cannot be applied here (no cluster), but they can be
checked offline: against the Kubernetes API schemas (`kubernetes-validate`, strict: unknown
fields are errors), and against the code: every setting a service requires is given, the keys
it reads are the files the keys Job makes, the probes hit /health and /ready, and the Strimzi
users may read what their service consumes and write only their own topics."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from deploy.keys import main as make_keys
from deploy.kubernetes_keys import secret_files, secret_manifest
from services.accounts.settings import AccountsSettings
from services.bookings.settings import BookingsSettings
from services.notifier.settings import NotifierSettings

K8S = Path(__file__).parents[2] / "deploy" / "k8s"
KUBERNETES_VERSION = "1.31.0"
SETTINGS = {"accounts": AccountsSettings, "bookings": BookingsSettings, "notifier": NotifierSettings}
STRIMZI = {"KafkaTopic", "KafkaUser"}


def documents() -> list[tuple[str, dict]]:
    return [
        (path.name, doc)
        for path in sorted(K8S.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def of_kind(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for _, doc in documents() if doc["kind"] == kind}


@pytest.mark.parametrize(
    ("file", "doc"),
    [(f, d) for f, d in documents() if d["kind"] not in STRIMZI],
    ids=lambda v: v if isinstance(v, str) else f"{v['kind']}/{v['metadata']['name']}",
)
def test_each_manifest_is_valid_against_the_kubernetes_schemas(file, doc):
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_every_kind_the_deployment_needs_is_there():
    kinds = {doc["kind"] for _, doc in documents()}
    needed = {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Secret", "Job"}
    assert needed | STRIMZI <= kinds
    for name in SETTINGS:
        for kind in ("Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"):
            assert name in of_kind(kind), (kind, name)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_each_service_is_given_every_setting_it_requires(name, monkeypatch, tmp_path):
    deployment = of_kind("Deployment")[name]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", f"services.{name}"]
    env = dict(of_kind("ConfigMap")["booking-accounts"]["data"])
    secrets = {s: d.get("stringData", {}) for s, d in of_kind("Secret").items()}
    make_keys([str(tmp_path)])  # what the keys Job puts in its Secret
    secrets["booking-accounts-keys"] = {
        key: data.decode().strip() for key, data in secret_files(tmp_path).items()
    }
    # Strimzi's User Operator writes each KafkaUser's password into a Secret of its name.
    secrets.update({user: {"password": "made-by-strimzi"} for user in of_kind("KafkaUser")})
    for variable in container["env"]:
        if "value" in variable:  # $(NAME): a variable defined before it (Kubernetes expands it)
            env[variable["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], variable["value"])
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            env[variable["name"]] = secrets[ref["name"]][ref["key"]]
    for variable in list(os.environ):  # only what the manifest gives
        monkeypatch.delenv(variable)
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    settings = SETTINGS[name]()
    assert settings.store == "postgres" and settings.store_settings().postgres_database(name) == name
    assert settings.http_port == container["ports"][0]["containerPort"]
    (keys,) = [v for v in pod["volumes"] if v["name"] == "keys"]
    mounted = {item["path"] for item in keys["secret"]["items"]}
    assert keys["secret"]["secretName"] == "booking-accounts-keys"
    for path_setting in ("session_signing_key_file", "session_public_key_file", "sealing_key_file"):
        path = getattr(settings, path_setting, None)
        if path is not None:
            assert path.parent == Path("/keys") and path.name in mounted
            assert path.name in secrets["booking-accounts-keys"]
    # Its own bus key, and every service's public bus key (backbone/signing.py).
    assert settings.bus_key_file == Path(f"/keys/bus/{name}.key") and f"bus/{name}.key" in mounted
    assert settings.bus_trusted_keys_dir == Path("/keys/bus/trusted")
    (ca,) = [v for v in pod["volumes"] if v["name"] == "kafka-ca"]
    mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["kafka-ca"]
    assert settings.kafka_ssl_ca_file == Path(mount) / ca["secret"]["items"][0]["path"]
    assert {f"bus/trusted/{s}.current.pub" for s in SETTINGS} <= mounted
    assert {item["key"] for item in keys["secret"]["items"]} <= set(secrets["booking-accounts-keys"])


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_probes_are_liveness_on_health_and_readiness_on_ready(name):
    (container,) = of_kind("Deployment")[name]["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"


def test_the_autoscaler_stops_at_the_partition_count():
    partitions = {t["spec"]["partitions"] for t in of_kind("KafkaTopic").values()}
    assert partitions == {int(of_kind("ConfigMap")["booking-accounts"]["data"]["TOPIC_PARTITIONS"])}
    for hpa in of_kind("HorizontalPodAutoscaler").values():
        assert hpa["spec"]["maxReplicas"] <= min(partitions)


def test_every_topic_of_the_contracts_is_declared_and_keys_topics_are_compacted():
    from contracts.personal import subject_keys_topic
    from contracts.topics import ALL, dead_letters

    expected = (
        set(ALL)
        | {dead_letters(s) for s in SETTINGS}
        | {subject_keys_topic(s) for s in ("accounts", "bookings")}
    )
    topics = {t["spec"]["topicName"]: t for t in of_kind("KafkaTopic").values()}
    assert set(topics) == expected
    for name, topic in topics.items():
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "booking-kafka"
        compacted = topic["spec"]["config"].get("cleanup.policy") == "compact"
        assert compacted == name.endswith(".subject-keys")


def consumed_topics(tmp_path: Path) -> dict[str, set[str]]:
    """What each service subscribes to, from the services as their bootstraps build them."""
    from backbone.credentials import load_or_create_sealing_keys, load_or_create_signing_key, public_path
    from contracts.topics import of_service
    from services.accounts.bootstrap import bootstrap as accounts
    from services.bookings.bootstrap import bootstrap as bookings
    from services.notifier.bootstrap import bootstrap as notifier

    _, public = load_or_create_sealing_keys(tmp_path / "sealing.key")
    signing = tmp_path / "session-signing-key.pem"
    load_or_create_signing_key(signing)
    from backbone.signing import key_settings

    common = {"store": "memory", "data_dir": tmp_path}
    bus = {name: key_settings(tmp_path / "bus", name) for name in ("accounts", "bookings", "notifier")}
    services = [
        accounts(
            AccountsSettings(
                **common,
                **bus["accounts"],
                session_signing_key_file=signing,
                notifier_public_key=base64.b64encode(public).decode(),
            )
        ),
        bookings(BookingsSettings(**common, **bus["bookings"], session_public_key_file=public_path(signing))),
        notifier(NotifierSettings(**common, **bus["notifier"], sealing_key_file=tmp_path / "sealing.key")),
    ]
    consumed = {s.name: {t for c in s.consumers for t in c.topics} for s in services}
    for service in services:  # what it checks (or creates) at start: what it reads or writes
        assert set(service.topics + service.compacted_topics) == set(of_service(service.name)), service.name
        service.app.close()
    return consumed


def test_each_kafka_user_has_exactly_the_derived_acls():
    """deploy/k8s and the local secured broker get their ACLs from one place
    (`backbone.kafkaacl.derived`, from `contracts.topics.rights`): they cannot drift."""
    from backbone.kafkaacl import derived

    users = of_kind("KafkaUser")
    acls = derived()
    assert set(users) == set(acls)
    for name, user in users.items():
        assert user["spec"]["authentication"]["type"] == "scram-sha-512"
        assert user["spec"]["authorization"]["acls"] == [acl.strimzi() for acl in acls[name]], name


def test_each_service_reads_what_it_consumes_and_writes_only_its_own_topics(tmp_path):
    """The table the ACLs come from says what the services really subscribe to; only the
    publishers write bookings.commands; a service writes only topics named after it."""
    from backbone.kafkaacl import derived
    from contracts.topics import BOOKINGS_COMMANDS, PUBLISHER_USER, rights

    table = rights()
    for service, topics in consumed_topics(tmp_path).items():
        assert set(table[service].reads) == topics, service
        assert all(t.startswith(f"{service}.") for t in table[service].writes), service
    writers = {
        principal
        for principal, acls in derived().items()
        for acl in acls
        if acl.name == BOOKINGS_COMMANDS and "Write" in acl.operations
    }
    assert writers == {PUBLISHER_USER}


def test_the_kafka_topics_are_those_the_services_and_the_operator_tool_create():
    from backbone.settings import ServiceSettings
    from backbone.topics import every

    config = of_kind("ConfigMap")["booking-accounts"]["data"]
    settings = ServiceSettings(**{k.lower(): v for k, v in config.items() if k.startswith("TOPIC_")})
    assert not settings.topic_auto_create  # Strimzi's Topic Operator owns them
    declared = {
        t["spec"]["topicName"]: (t["spec"]["partitions"], t["spec"]["replicas"], t["spec"].get("config", {}))
        for t in of_kind("KafkaTopic").values()
    }
    wanted = {
        s.name: (s.partitions, s.replication_factor, {k: str(v) for k, v in s.config.items()})
        for s in every(settings)
    }
    assert {k: (p, r, {c: str(v) for c, v in conf.items()}) for k, (p, r, conf) in declared.items()} == wanted


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_each_service_reaches_kafka_as_its_own_kafka_user(name):
    config = of_kind("ConfigMap")["booking-accounts"]["data"]
    assert (
        config["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL" and config["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    )
    (container,) = of_kind("Deployment")[name]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["KAFKA_SASL_USERNAME"]["value"] == name and name in of_kind("KafkaUser")
    assert env["KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": name, "key": "password"}


def test_the_keys_job_makes_a_secret_of_the_key_files(tmp_path):
    make_keys([str(tmp_path)])
    secret = secret_manifest("booking-accounts-keys", tmp_path)
    kubernetes_validate.validate(secret, KUBERNETES_VERSION, strict=True)
    services = ("accounts", "bookings", "notifier")
    assert set(secret["data"]) == {
        "sealing.key",
        "sealing.pub",
        "session-signing-key.pem",
        "session-signing-key.pub.pem",
        *(f"bus.{s}.key" for s in services),
        *(f"bus.trusted.{s}.pub" for s in services),
    }
    assert base64.b64decode(secret["data"]["sealing.pub"]) == (tmp_path / "sealing.pub").read_bytes()
    (job,) = of_kind("Job").values()
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"][:3] == ["python", "-m", "deploy.kubernetes_keys"]
    assert container["command"][3] == secret["metadata"]["name"]


def test_accounts_replicas_share_their_rate_limits_on_the_redis_service():
    (container,) = of_kind("Deployment")["accounts"]["spec"]["template"]["spec"]["containers"]
    env = {v["name"]: v for v in container["env"]}
    assert env["RATE_LIMIT_STORAGE"]["value"] == "async+redis://:$(REDIS_PASSWORD)@redis:6379/0"
    names = [v["name"] for v in container["env"]]
    assert names.index("REDIS_PASSWORD") < names.index("RATE_LIMIT_STORAGE")  # defined before use
    ref = env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "booking-accounts-redis", "key": "password"}
    assert "password" in of_kind("Secret")["booking-accounts-redis"]["stringData"]
    service = of_kind("Service")["redis"]
    assert service["spec"]["ports"][0]["port"] == 6379
    (redis,) = of_kind("Deployment")["redis"]["spec"]["template"]["spec"]["containers"]
    assert redis["args"][:2] == ["--requirepass", "$(REDIS_PASSWORD)"]
    assert {v["name"] for v in redis["env"]} == {"REDIS_PASSWORD"}
