"""`booking-accounts`: the operator and audit tool of the whole system (see docs/operations.md).

Every command that changes something has --dry-run; every command ends with a summary, exits
non-zero when it failed (1; 2 for a usage error), and prints JSON on stdout with --json.
Progress bars, notes and errors go to stderr.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from backbone.logging import configure
from ops import cli_audit, output, registry
from ops.cli_dlq import dlq
from ops.cli_positions import positions
from ops.cli_topics import cli as topics
from ops.commands import (
    DEBUG,
    DryRun,
    Json,
    Service,
    deployment,
    ends_a_command,
    failure,
    handles_errors,
    maybe_producer,
    run,
    topic_names,
)
from ops.config import CONFIG_ENV, Deployment, OpsError
from ops.kafka import Kafka
from ops.output import emit_json, fail, note, parse_time, progress, table
from ops.rebuild import Rebuild
from ops.replay import replay as run_replay
from ops.republish import republish as run_republish
from ops.status import ServiceStatus, kafka_status, store_status
from services.notifier.cli import cli as emails


class _Tool(TyperGroup):
    """Every command, its subcommands included, fails the same way: one sentence on stderr
    and exit code 1 (2 for a usage error); `--debug` prints the traceback first."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as error:
            if ends_a_command(error):
                raise
            raise failure(error) from None


app = typer.Typer(
    name="booking-accounts",
    cls=_Tool,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Operate and audit the booking-accounts services: status, rebuild, replay, republish, "
    "dead letters, history, export, verify. Point it at a deployment with the services' own "
    f"environment variables and/or --config FILE (${CONFIG_ENV}); see docs/operations.md.",
)


@app.callback()
def _options(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", envvar=CONFIG_ENV, help="TOML file naming each service's settings."),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="Print the traceback of a failure, not only what failed.")
    ] = False,
) -> None:
    DEBUG.set(debug)
    configure("booking-accounts", "DEBUG" if debug else "WARNING", "console")
    # The Kafka client logs each failed connection at ERROR; the failure reaches the operator
    # once, as the command's one line (all of it with --debug).
    # (asyncio: a producer that never connected is reported unclosed when collected.)
    for library in ("aiokafka", "asyncio"):
        logging.getLogger(library).setLevel(logging.NOTSET if debug else logging.CRITICAL)
    try:
        ctx.obj = Deployment.load(config)
    except OpsError as error:
        raise fail(str(error)) from None


@app.command()
@handles_errors
def status(
    ctx: typer.Context,
    services: Annotated[list[str] | None, typer.Argument(help="Services (default: all).")] = None,
    json_: Json = False,
) -> None:
    """Events stored; relay and projections vs the head of the log; each consumer's position
    vs the end of its topics, per partition; dead letters; unfinished rebuilds."""

    async def gather() -> list[ServiceStatus]:
        found = []
        with registry.services(deployment(ctx), services or ()) as handles:
            for handle in handles:
                result = await asyncio.to_thread(store_status, handle)
                try:
                    async with Kafka(handle.kafka) as kafka:
                        await kafka_status(handle, result, kafka)
                except OpsError as error:
                    result.problems.append(str(error))
                found.append(result)
        return found

    results = run(gather())
    if json_:
        emit_json([r.as_dict() for r in results])
    else:
        for result in results:
            _show_status(result)
    if any(r.problems for r in results):
        raise typer.Exit(1)


def _show_status(result: ServiceStatus) -> None:
    output.out.print(f"\n{result.service}  store: {result.store}  events: {result.events}", style="bold")
    table(
        None,
        ["follows the log", "kind", "position", "lag"],
        [(f.name, f.kind, f.position, f.lag) for f in result.followers],
    )
    table(
        None,
        ["consumer", "positions in", "partition", "position", "end", "lag"],
        [
            (c.name, c.positions, f"{p.topic}/{p.partition}", p.position, p.end, p.lag)
            for c in result.consumers
            for p in c.partitions
        ],
    )
    for d in result.dead_letters:
        output.out.print(f"dead letters {d.topic}: {d.size} ({'?' if d.open is None else d.open} open)")
    for name, position in result.rebuilds.items():
        note(f"unfinished rebuild of {name}: shadow at position {position}", style="yellow")
    for problem in result.problems:
        note(problem, style="red")


@app.command()
@handles_errors
def rebuild(
    ctx: typer.Context,
    service: Service,
    prepare_only: Annotated[
        bool, typer.Option("--prepare-only", help="Build (or resume) the shadow; do not switch it in yet.")
    ] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="Throw away an unfinished rebuild first.")] = False,
    discard: Annotated[
        bool, typer.Option("--discard", help="Only throw away an unfinished rebuild.")
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, max=50_000, help="Events per transaction.")] = 10_000,
    dry_run: DryRun = False,
    json_: Json = False,
) -> None:
    """Rebuild a service's read models from its event log into a shadow while the service keeps
    serving, then switch them in. An interrupted rebuild resumes where it stopped."""
    reports = []
    with registry.service(deployment(ctx), service) as handle:
        if not handle.read_models:
            raise OpsError(f"{service} has no read models")
        for read_model, projections in handle.read_models:
            job = Rebuild(handle.app, read_model, projections, batch_size)
            if discard:
                done = not dry_run and job.discard()
                note(f"{job.label}: {'unfinished rebuild discarded' if done else 'nothing discarded'}")
            elif dry_run:
                reports.append(job.plan())
            else:
                with progress(f"rebuild {job.label}", json_) as update:
                    reports.append(job.run(fresh=fresh, switch=not prepare_only, progress=update))
    if json_:
        emit_json([{**vars(r), "events_per_second": round(r.events_per_second, 1)} for r in reports])
        return
    for r in reports:
        state = f"switched in at position {r.switched_at}" if r.switched else "shadow built, not switched in"
        resumed = f", resumed from position {r.resumed_from}" if r.resumed_from is not None else ""
        outcome = (
            "dry run" if dry_run else f"{r.applied} events in {r.seconds:.1f}s ({r.events_per_second:,.0f}/s)"
        )
        output.out.print(f"{r.read_model}: {outcome}{resumed}; {state if not dry_run else 'nothing changed'}")
        for line in r.notes:
            note(line)


@app.command()
@handles_errors
def replay(
    ctx: typer.Context,
    service: Service,
    consumer: Annotated[
        str | None, typer.Option(help="One consumer (default: all of the service's).")
    ] = None,
    topic: Annotated[list[str] | None, typer.Option(help="Only this topic (repeatable).")] = None,
    from_offset: Annotated[int | None, typer.Option(min=0, help="Start at this offset.")] = None,
    from_time: Annotated[str | None, typer.Option(help="Start at this time (ISO 8601).")] = None,
    dry_run: DryRun = False,
    json_: Json = False,
) -> None:
    """Re-read topics from an offset or a time through the service's consumers, exactly once:
    what was applied already is skipped, what was not is applied."""
    since = parse_time(from_time, "--from-time")

    async def go() -> list:
        reports = []
        with registry.service(deployment(ctx), service) as handle:
            consumers = [handle.consumer(consumer)] if consumer else handle.consumers
            if not consumers:
                raise OpsError(f"{service} consumes nothing")
            topics = topic_names(handle, topic)
            async with Kafka(handle.kafka) as kafka, maybe_producer(handle, dry_run) as broker:
                for each in consumers:
                    wanted = [t for t in topics if t in each.topics]
                    if topics and not wanted:
                        continue
                    with progress(f"replay {each.name}", json_) as update:
                        report = await run_replay(
                            each,
                            kafka,
                            broker,
                            topics=wanted,
                            from_offset=from_offset,
                            from_time=since,
                            dry_run=dry_run,
                            progress=update,
                        )
                    reports.append(report)
        return reports

    reports = run(go())
    if json_:
        emit_json([r.as_dict() for r in reports])
        return
    for r in reports:
        output.out.print(
            f"{r.consumer}: read {r.read}, applied {r.applied}, already applied {r.redelivered}, "
            f"duplicates {r.duplicates}, dead-lettered {r.dead_lettered}"
            + (" (dry run)" if r.dry_run else "")
        )
        for line in r.notes:
            note(line)


@app.command()
@handles_errors
def republish(
    ctx: typer.Context,
    service: Service,
    from_position: Annotated[int, typer.Option("--from", min=1, help="First position of the log.")] = 1,
    to_position: Annotated[
        int | None, typer.Option("--to", min=1, help="Last position (default: head).")
    ] = None,
    topic: Annotated[
        list[str] | None, typer.Option(help="Only messages for this topic (repeatable).")
    ] = None,
    keys: Annotated[bool, typer.Option("--keys", help="First re-send every subject key it owns.")] = False,
    dry_run: DryRun = False,
    json_: Json = False,
) -> None:
    """Re-send a range of a service's stored events to Kafka, with the same event ids and
    upstream positions: consumers that applied them already drop them."""

    async def go():
        with registry.service(deployment(ctx), service) as handle:
            topics = topic_names(handle, topic)
            async with maybe_producer(handle, dry_run) as broker:
                with progress(f"republish {service}", json_) as update:
                    return await run_republish(
                        handle,
                        broker,
                        from_position=from_position,
                        to_position=to_position,
                        topics=topics,
                        keys=keys,
                        dry_run=dry_run,
                        progress=update,
                    )

    report = run(go())
    if json_:
        emit_json(report.as_dict())
        return
    verb = "would re-send" if dry_run else "re-sent"
    output.out.print(
        f"{service}: events {report.from_position}..{report.to_position} ({report.events}): {verb} "
        f"{sum(report.messages.values())} messages and {report.keys} subject keys in {report.seconds:.1f}s"
    )
    table(None, ["topic", "messages"], sorted(report.messages.items()))


app.add_typer(dlq, name="dlq")
app.add_typer(positions, name="positions")
app.add_typer(topics, name="topics")
app.add_typer(emails, name="emails", help="The notifier's delivery log; send parked emails again.")
for audit_command in (cli_audit.history, cli_audit.export, cli_audit.verify):
    app.command()(audit_command)


def main() -> None:
    app()
