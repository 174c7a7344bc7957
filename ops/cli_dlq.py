"""`booking-accounts dlq ...`: the dead letters of a service (see ops.dlq)."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from ops import dlq as letters
from ops import output, registry
from ops.commands import DryRun, Json, Service, deployment, handles_errors, maybe_producer, run
from ops.config import OpsError
from ops.kafka import Kafka
from ops.output import emit_json, table

dlq = typer.Typer(
    no_args_is_help=True, help="Dead letters: list, show, retry (as they were or fixed), discard."
)

OPERATOR_ENV = "BOOKING_ACCOUNTS_OPERATOR"
LetterId = Annotated[
    str, typer.Argument(help="<partition>:<offset> in the dead-letter topic (see `dlq list`).")
]
Operator = Annotated[
    str | None,
    typer.Option(help=f"Who does it, for the record (default: ${OPERATOR_ENV}, else your login)."),
]


@dlq.command("list")
@handles_errors
def list_letters(
    ctx: typer.Context,
    service: Service,
    open_only: Annotated[bool, typer.Option("--open", help="Only those nobody handled yet.")] = False,
    json_: Json = False,
) -> None:
    """Every dead letter of a service: why, from where, and what operators did about it."""

    async def go() -> list[letters.Letter]:
        with registry.service(deployment(ctx), service) as handle:
            async with Kafka(handle.kafka) as kafka:
                return await letters.letters(handle, kafka, include_handled=not open_only)

    found = run(go())
    if json_:
        emit_json([letter.as_dict() for letter in found])
        return
    table(
        f"{len(found)} dead letters of {service}",
        ["id", "status", "reason", "from", "consumer", "at", "detail"],
        [
            (x.id, x.status, x.reason, x.original, x.consumer, x.dead_lettered_at, x.detail[:120])
            for x in found
        ],
    )


@dlq.command()
@handles_errors
def show(ctx: typer.Context, service: Service, letter_id: LetterId, json_: Json = False) -> None:
    """One dead letter: its headers, its body, and every action taken on it."""

    async def go() -> letters.Letter:
        with registry.service(deployment(ctx), service) as handle:
            async with Kafka(handle.kafka) as kafka:
                return (await letters.letter(handle, kafka, letter_id))[0]

    found = run(go())
    if json_:
        emit_json(found.as_dict())
        return
    output.out.print(f"{found.id} {found.status}: {found.reason} from {found.original}", style="bold")
    output.out.print(found.detail)
    table("headers", ["name", "value"], sorted(found.headers.items()))
    for action in found.actions:
        output.out.print(
            f"{action['at']}  {action['by']}  {action['action']}  "
            + str({k: v for k, v in action.items() if k not in ("at", "by", "action")})
        )
    output.out.print(letters.pretty(found.body))


@dlq.command()
@handles_errors
def retry(
    ctx: typer.Context,
    service: Service,
    letter_id: LetterId,
    body_file: Annotated[
        Path | None, typer.Option(help="The fixed message ('-': stdin); default: the message as it was.")
    ] = None,
    note: Annotated[str | None, typer.Option(help="Why, for the record.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Send even if the consumer would refuse it.")
    ] = False,
    again: Annotated[bool, typer.Option("--again", help="Retry a letter that was retried already.")] = False,
    operator: Operator = None,
    dry_run: DryRun = False,
    json_: Json = False,
) -> None:
    """Publish a dead letter again to the topic it came from (fixed with --body-file), after
    checking the consumer would take it; recorded with who, when and what."""
    body = None
    if body_file is not None:
        body = sys.stdin.buffer.read() if body_file == Path("-") else _read(body_file)

    async def go() -> letters.Action:
        with registry.service(deployment(ctx), service) as handle:
            async with Kafka(handle.kafka) as kafka, maybe_producer(handle, dry_run) as broker:
                return await letters.retry(
                    handle,
                    kafka,
                    broker,
                    letter_id,
                    operator=_operator(operator),
                    body=body,
                    note=note,
                    force=force,
                    again=again,
                    dry_run=dry_run,
                )

    _done(run(go()), json_)


@dlq.command()
@handles_errors
def discard(
    ctx: typer.Context,
    service: Service,
    letter_id: LetterId,
    reason: Annotated[str, typer.Option(help="Why it will not be retried (recorded).")],
    operator: Operator = None,
    dry_run: DryRun = False,
    json_: Json = False,
) -> None:
    """Mark a dead letter as not to be retried, and why; recorded with who and when."""

    async def go() -> letters.Action:
        with registry.service(deployment(ctx), service) as handle:
            async with Kafka(handle.kafka) as kafka:
                return await letters.discard(
                    handle, kafka, letter_id, operator=_operator(operator), reason=reason, dry_run=dry_run
                )

    _done(run(go()), json_)


def _done(action: letters.Action, json_: bool) -> None:
    if json_:
        emit_json(action.as_dict())
        return
    where = f" as {action.republished_as}" if action.republished_as else ""
    prefix = "would be " if action.dry_run else ""
    output.out.print(f"{action.letter}: {prefix}{action.action}{where} by {action.by}")


def _operator(given: str | None) -> str:
    name = given or os.environ.get(OPERATOR_ENV) or getpass.getuser()
    if not name or len(name) > 90 or ":" in name:
        raise OpsError("give a plain operator name with --operator (recorded as staff:<name>)")
    return name


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise OpsError(f"cannot read {path}: {error}") from None
