"""`booking-accounts positions ...`: decide about an inbox partition whose stored position does
not fit it (another life of the topic, beyond the log end, below the log start; see
`backbone.topiclife` and `ops.positions`). `booking-accounts status` lists such partitions."""

from __future__ import annotations

from typing import Annotated

import typer

from ops import output, registry
from ops import positions as decisions
from ops.cli_dlq import Operator, _operator
from ops.commands import DryRun, Json, Service, deployment, handles_errors, run
from ops.kafka import Kafka
from ops.output import emit_json

positions = typer.Typer(
    no_args_is_help=True,
    help="Stalled inbox partitions (stored positions of another life of a topic): replay from the "
    "start, or accept the log start. Either decision is recorded.",
)

Partition = Annotated[str, typer.Argument(help="<topic>/<partition>, e.g. accounts.events/0.")]
Note = Annotated[str | None, typer.Option(help="Why, for the record.")]


@positions.command("replay-from-start")
@handles_errors
def replay_from_start(
    ctx: typer.Context,
    service: Service,
    partition: Partition,
    note: Note = None,
    operator: Operator = None,
    dry_run: DryRun = False,
    json_: Json = False,
) -> None:
    """Read the partition again from its log start; what was applied already is recognised
    (upstream positions, command receipts) and skipped: idempotent."""
    _decide(ctx, service, partition, "replay_from_start", note, operator, dry_run, json_)


@positions.command("accept-log-start")
@handles_errors
def accept_log_start(
    ctx: typer.Context,
    service: Service,
    partition: Partition,
    note: Note = None,
    operator: Operator = None,
    dry_run: DryRun = False,
    json_: Json = False,
) -> None:
    """Take the partition's log as it is now from its start, upstream dedupe marks afresh too
    (the producers started afresh as well)."""
    _decide(ctx, service, partition, "accept_log_start", note, operator, dry_run, json_)


def _decide(
    ctx: typer.Context,
    service: str,
    partition: str,
    decision: str,
    note: str | None,
    operator: str | None,
    dry_run: bool,
    json_: bool,
) -> None:
    async def go() -> decisions.Decision:
        with registry.service(deployment(ctx), service) as handle:
            async with Kafka(handle.kafka) as kafka:
                return await decisions.decide(
                    handle,
                    kafka,
                    partition,
                    decision,
                    operator=_operator(operator),
                    note=note,
                    dry_run=dry_run,
                )

    done = run(go())
    if json_:
        emit_json(done.as_dict())
        return
    prefix = "would record" if done.dry_run else "recorded"
    output.out.print(
        f"{done.consumer} {done.partition}: {prefix} {done.decision} by {done.by} "
        f"(was {done.reason}: {done.detail}); the service resumes the partition within seconds"
    )
