"""What every command of the operator tool shares: options, the deployment, error handling."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any, TypeVar

import typer
from faststream.kafka import KafkaBroker

from ops import registry
from ops.config import Deployment, OpsError
from ops.kafka import producer
from ops.output import fail

T = TypeVar("T")

Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Say what would be done; change nothing.")]
Service = Annotated[str, typer.Argument(help=f"One of: {', '.join(registry.NAMES)}.")]


def handles_errors(command: Callable[..., T]) -> Callable[..., T]:
    """An `OpsError` ends the command with its message on stderr and exit code 1."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> T:
        try:
            return command(*args, **kwargs)
        except OpsError as error:
            raise fail(str(error)) from None

    return run


def deployment(ctx: typer.Context) -> Deployment:
    return ctx.find_root().obj


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def topic_names(handle: registry.ServiceHandle, names: list[str] | None) -> list[str]:
    """Topic names as given, or prefixed with the deployment's namespace where that is how the
    service knows them."""
    known = {t for c in handle.consumers for t in c.topics} | set(handle.service.topics)
    return [name if name in known else handle.settings.topic(name) for name in names or ()]


@contextlib.asynccontextmanager
async def maybe_producer(handle: registry.ServiceHandle, dry_run: bool) -> AsyncIterator[KafkaBroker | None]:
    """The tool's producer, or none for a dry run (which sends nothing)."""
    if dry_run:
        yield None
        return
    async with producer(handle.kafka) as broker:
        yield broker
