"""`booking-accounts topics list|create`: the system's topics, for clusters whose topics are
managed outside the services (`TOPIC_AUTO_CREATE=false`).

The list is `backbone.topics.every`: the same partitions, replication, retention and
compaction the services give a topic they create themselves. `create` makes the missing ones
(and sets the dead letters' retention on those that exist) with the tool's own Kafka settings:
on a cluster with ACLs, as a principal allowed to create topics (`booking-ops`).
"""

from __future__ import annotations

import typer
from aiokafka.errors import KafkaConnectionError

from backbone import topics
from backbone.settings import ServiceSettings
from ops.commands import DryRun, Json, deployment, handles_errors, run
from ops.config import OpsError
from ops.output import emit_json, note, table

cli = typer.Typer(
    no_args_is_help=True,
    help="The topics of the system (partitions, retention, compaction): print them, or create "
    "those missing (for TOPIC_AUTO_CREATE=false).",
)


def _settings(ctx: typer.Context) -> ServiceSettings:
    # The settings every service shares (namespace, partitions, replication, retention, Kafka).
    return deployment(ctx).settings("topics", ServiceSettings)


def _show(specs: list[topics.TopicSpec], created: set[str] | None = None) -> None:
    rows = [
        [
            spec.name,
            spec.partitions,
            spec.replication_factor,
            spec.config.get("cleanup.policy", "(cluster default)"),
            spec.config.get("retention.ms", "(cluster default)" if not spec.compacted else "-"),
            spec.config.get("segment.ms", "(cluster default)"),
            *([("created" if spec.name in created else "exists")] if created is not None else []),
        ]
        for spec in specs
    ]
    columns = ["topic", "partitions", "replicas", "cleanup.policy", "retention.ms", "segment.ms"]
    table("Topics", columns + (["state"] if created is not None else []), rows)


@cli.command("list")
@handles_errors
def list_(ctx: typer.Context, json_: Json = False) -> None:
    """Print every topic with its partitions, replication, retention and compaction (asks
    nothing of Kafka)."""
    specs = topics.every(_settings(ctx))
    if json_:
        emit_json([spec.as_dict() for spec in specs])
    else:
        _show(specs)


@cli.command("create")
@handles_errors
def create(ctx: typer.Context, dry_run: DryRun = False, json_: Json = False) -> None:
    """Create the topics that do not exist yet (idempotent), as the list says."""
    settings = _settings(ctx)
    specs = topics.every(settings)
    try:
        created = set(run(topics.create(settings.kafka_cluster(), specs, dry_run=dry_run)))
    except KafkaConnectionError as error:
        raise OpsError(f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {error}") from None
    if json_:
        emit_json(
            {
                "dry_run": dry_run,
                "created": sorted(created),
                "existing": sorted(s.name for s in specs if s.name not in created),
            }
        )
        return
    _show(specs, created)
    verb = "would create" if dry_run else "created"
    note(f"{verb} {len(created)} of {len(specs)} topics on {settings.kafka_bootstrap_servers}")
