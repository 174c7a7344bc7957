"""The topics of a deployment as Kafka needs them: partitions, replication, retention and
compaction, from one place.

Both the services (at start, `prepare`) and the operator tool (`booking-accounts topics list|
create`) take the topic list from here, so a cluster whose topics are made by the tool (or by
Strimzi `KafkaTopic`s, deploy/k8s/kafka.yaml) gets exactly what a service would have made:

* every topic: `TOPIC_PARTITIONS` partitions, `TOPIC_REPLICATION_FACTOR` replicas;
* the subject-keys topics are compacted, with segments closed after `SUBJECT_KEYS_SEGMENT_MS`
  so that an erased key leaves Kafka within about that long (`backbone.personal`);
* the dead-letter topics delete after `DEAD_LETTER_RETENTION_MS` (a dead letter is a raw
  message that an erasure cannot reach), set again at every start;
* the others delete after `TOPIC_RETENTION_MS` (unset: the cluster's default);
* every topic: `TOPIC_MIN_INSYNC_REPLICAS` (unset: the cluster's default).

With `TOPIC_AUTO_CREATE=false` (topics managed elsewhere) a service never creates or alters a
topic: it checks that each of its topics exists and stops at start naming any that is missing
(`TopicsMissing`), so that it never runs half-connected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, for_code

from backbone import deadletters
from backbone.bus import _until_led
from backbone.kafkasecurity import KafkaCluster
from backbone.logging import get_logger
from backbone.settings import ServiceSettings
from contracts.topics import all_topics

log = get_logger(__name__)

DEAD_LETTERS = deadletters.SUFFIX  # contracts.topics.dead_letters(service)
SUBJECT_KEYS = ".subject-keys"  # contracts.topics.subject_keys(service)


class TopicsMissing(Exception):
    """Topics a service needs do not exist, and it may not create them (TOPIC_AUTO_CREATE)."""


@dataclass(frozen=True)
class TopicSpec:
    name: str  # the real name (with the deployment's namespace)
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)

    @property
    def compacted(self) -> bool:
        return self.config.get("cleanup.policy") == "compact"

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.name,
            "partitions": self.partitions,
            "replication_factor": self.replication_factor,
            "config": dict(self.config),
        }


def spec(settings: ServiceSettings, name: str, compacted: bool | None = None) -> TopicSpec:
    """How topic `name` (its real name) is made in this deployment. Compacted: the keys
    topics (or as said)."""
    if compacted is None:
        compacted = name.endswith(SUBJECT_KEYS)
    config: dict[str, str] = {}
    if compacted:
        # Only the latest record per key is kept; an overwritten one (an erased subject key) is
        # removed once its segment is closed (segment.ms) and the cleaner has run.
        segment = str(settings.subject_keys_segment_ms)
        config = {
            "cleanup.policy": "compact",
            "segment.ms": segment,
            "min.cleanable.dirty.ratio": "0.01",
            "min.compaction.lag.ms": "0",
            "delete.retention.ms": segment,
        }
    elif name.endswith(DEAD_LETTERS):
        config = {"cleanup.policy": "delete", "retention.ms": str(settings.dead_letter_retention_ms)}
    elif settings.topic_retention_ms is not None:
        config = {"retention.ms": str(settings.topic_retention_ms)}
    if settings.topic_min_insync_replicas is not None:
        config["min.insync.replicas"] = str(settings.topic_min_insync_replicas)
    return TopicSpec(name, settings.topic_partitions, settings.topic_replication_factor, config)


def every(settings: ServiceSettings) -> list[TopicSpec]:
    """Every topic of the system in this deployment (the operator tool's list)."""
    return [spec(settings, settings.topic(name)) for name in all_topics()]


def _admin(cluster: KafkaCluster) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=cluster.bootstrap_servers,
        request_timeout_ms=30_000,
        **cluster.security.for_aiokafka(),
    )


async def create(cluster: KafkaCluster, specs: Iterable[TopicSpec], dry_run: bool = False) -> list[str]:
    """Create the topics that do not exist (idempotent: another creator may be first), set the
    retention of the dead-letter topics that do, and wait until every partition has a leader.
    Returns the names created (with `dry_run`: that would be; nothing is changed)."""
    specs = list(specs)
    admin = _admin(cluster)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if dry_run or not specs:
            return [s.name for s in missing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                response = await admin.create_topics(
                    [
                        NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=s.config)
                        for s in missing
                    ]
                )
                # aiokafka returns each topic's error rather than raising it: a denial (no
                # Create for this principal) must stop the start, not pass unnoticed.
                for name, code, *message in response.topic_errors:
                    if code not in (0, TopicAlreadyExistsError.errno):
                        detail = message[0] if message and message[0] else ""
                        raise for_code(code)(f"cannot create topic {name}: {detail}".rstrip(": "))
            log.info("topics created", topics=[s.name for s in missing])
        kept = [s for s in specs if s.name in existing and s.name.endswith(DEAD_LETTERS)]
        if kept:  # retention is set at every start: a changed DEAD_LETTER_RETENTION_MS applies
            responses = await admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, s.name, configs=s.config) for s in kept]
            )
            refused = [r for response in responses for r in response.resources if r[0] != 0]
            if refused:
                raise RuntimeError(f"cannot set the retention of dead-letter topics: {refused}")
        await _until_led(admin, [s.name for s in specs])
        return [s.name for s in missing]
    finally:
        await admin.close()


async def missing(cluster: KafkaCluster, names: Iterable[str]) -> list[str]:
    """The topics of `names` that the cluster does not have (or does not show this principal)."""
    admin = _admin(cluster)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
    finally:
        await admin.close()
    return [name for name in names if name not in existing]


async def prepare(settings: ServiceSettings, service: str, specs: list[TopicSpec]) -> None:
    """At a service's start: create its topics (TOPIC_AUTO_CREATE, the default), or check
    they all exist; `TopicsMissing` (the service stops) if not."""
    cluster = settings.kafka_cluster()
    if settings.topic_auto_create:
        await create(cluster, specs)
        return
    absent = await missing(cluster, [s.name for s in specs])
    if absent:
        problem = (
            f"{service} cannot start: topics missing on {cluster.bootstrap_servers}: "
            f"{', '.join(absent)}. TOPIC_AUTO_CREATE=false, so it does not create them: create them "
            "(`booking-accounts topics create`, or the cluster's KafkaTopics), or grant this "
            "principal Describe on them."
        )
        log.error("topics missing", service=service, topics=absent, detail=problem)
        raise TopicsMissing(problem)
