"""What every command of the operator tool shares: options, the deployment, error handling."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import sys
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine
from contextvars import ContextVar
from typing import Annotated, Any, TypeVar

import psycopg
import sqlalchemy as sa
import typer
from aiokafka.errors import KafkaError
from eventsourcing.persistence import PersistenceError
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
    """Any failure ends the command with one sentence on stderr and exit code 1 (`failure`);
    with --debug, the traceback first."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> T:
        try:
            return command(*args, **kwargs)
        except Exception as error:
            if ends_a_command(error):
                raise
            raise failure(error) from None

    return run


DEBUG: ContextVar[bool] = ContextVar("booking_accounts_debug", default=False)  # set by --debug


def ends_a_command(error: BaseException) -> bool:
    """Whether this is the command line library's own way to end (exit, usage error, abort)."""
    return isinstance(error, typer.Exit | typer.Abort) or hasattr(error, "exit_code")


def failure(error: BaseException) -> typer.Exit:
    """The one line an operator sees for a failure (the traceback too with --debug)."""
    debug = DEBUG.get()
    if debug:
        traceback.print_exception(error, file=sys.stderr)
    return fail(explain(error, hint=not debug))


def explain(error: BaseException, hint: bool = True) -> str:
    """One sentence: what failed and the reason the library gave, without its traceback."""
    if isinstance(error, OpsError):
        return _one_line(str(error))
    reason = _one_line(str(getattr(error, "orig", None) or error)) or type(error).__name__
    if isinstance(error, sa.exc.SQLAlchemyError | psycopg.Error | sqlite3.Error | PersistenceError):
        what = f"a store failed ({type(error).__name__}): {reason}"
    elif isinstance(error, KafkaError):
        what = f"Kafka failed ({type(error).__name__}): {reason}"
    elif isinstance(error, TimeoutError):
        what = f"timed out: {reason}" if str(error) else "timed out"
    elif isinstance(error, OSError):
        what = reason
    else:
        what = f"unexpected {type(error).__name__}: {reason}"
    return f"{what} (--debug shows the traceback)" if hint else what


def _one_line(text: str, limit: int = 600) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
