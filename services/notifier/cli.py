"""The notifier's operator commands: read the delivery log, send parked emails again.

    booking-accounts emails log --tenant lakeside --account <id> [--json]
    booking-accounts emails retry --by alice --all-parked [--tenant lakeside] [--dry-run]
    booking-accounts emails retry --by alice --email <id> --email <id>

(also `python -m services.notifier.cli ...`). It opens the notifier's own store with the same
settings as the service: under `booking-accounts`, those of its --config file and environment
(docs/operations.md); alone, the environment (STORE, DATA_DIR, POSTGRES_*). It may run
while the service runs: a retry is an event in the store, which the running service's sender
picks up within a second. Staff of one tenant use the HTTP API instead (`/docs`).
"""

from __future__ import annotations

import json
from typing import Annotated
from uuid import UUID

import typer
from eventsourcing.persistence import IntegrityError
from rich.console import Console
from rich.table import Table

from backbone import context
from backbone.domain import NotFound
from backbone.eventstore import store_env, store_missing
from backbone.personal import Vault
from backbone.readmodel import ReadModel
from backbone.sqltypes import jsonable
from services.notifier import views
from services.notifier.application import Notifier
from services.notifier.domainmodel import NotParked
from services.notifier.settings import NotifierSettings

SERVICE = "notifier"
cli = typer.Typer(help=__doc__.split("\n")[0], no_args_is_help=True, add_completion=False)
console = Console()


def _open(ctx: typer.Context) -> tuple[Notifier, ReadModel]:
    # Under the ops CLI, ctx.obj is its Deployment (settings from its config file as well).
    settings_of = getattr(ctx.find_root().obj, "settings", None)
    try:
        settings = settings_of(SERVICE, NotifierSettings) if settings_of else NotifierSettings()
    except Exception as error:  # incomplete or invalid settings: say which, no traceback
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    store = settings.store_settings()
    problem = store_missing(store, SERVICE)  # opening a missing store would create an empty one
    if problem:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(1)
    notifier = Notifier(
        env=store_env(store, SERVICE),
        vault=Vault(store.vault_url(SERVICE), SERVICE),
        policy=settings.delivery_policy(),
        default_language=settings.default_language,
    )
    return notifier, ReadModel(store.views_url(SERVICE), views.metadata)


@cli.command("log")
def delivery_log(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option(help="The tenant id.")],
    account: Annotated[UUID | None, typer.Option(help="Only emails about this account.")] = None,
    booking: Annotated[UUID | None, typer.Option(help="Only emails about this booking.")] = None,
    status: Annotated[
        str | None, typer.Option(help="queued, sending, sent, retrying, parked, withdrawn")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines, for tools.")] = False,
) -> None:
    """What was sent, when, to whom, and how it went (newest first). Erased recipients show
    as "[erased]"."""
    notifier, read_model = _open(ctx)
    try:
        with read_model.engine.connect() as conn:
            rows = views.delivery_log(
                conn, tenant, account_id=account, booking_id=booking, status=status, limit=limit
            )
        entries = [
            {
                "email_id": row["email_id"],
                "kind": row["template"],
                "to": views.recipient(row, notifier.vault),
                "status": row["status"],
                "attempts": row["attempts"],
                "queued_at": row["queued_at"],
                "sent_at": row["sent_at"],
                "last_error": row["last_error"],
            }
            for row in rows
        ]
    finally:
        notifier.close()
        read_model.close()
    if as_json:
        for entry in entries:
            typer.echo(json.dumps(jsonable(entry)))
        return
    table = Table("queued", "kind", "to", "status", "attempts", "sent", "last error")
    for e in entries:
        table.add_row(
            f"{e['queued_at']:%Y-%m-%d %H:%M:%S}",
            e["kind"],
            e["to"] or "[erased]",
            e["status"],
            str(e["attempts"]),
            f"{e['sent_at']:%Y-%m-%d %H:%M:%S}" if e["sent_at"] else "",
            e["last_error"] or "",
        )
    console.print(table)
    console.print(f"{len(entries)} email(s)")


@cli.command()
def retry(
    ctx: typer.Context,
    by: Annotated[str, typer.Option(help="Who is retrying (recorded with each retry).")],
    email: Annotated[list[UUID] | None, typer.Option(help="A parked email's id (repeatable).")] = None,
    all_parked: Annotated[bool, typer.Option("--all-parked", help="Every parked email.")] = False,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's emails.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be retried.")] = False,
) -> None:
    """Send parked emails again, each with a fresh budget of attempts."""
    if not email and not all_parked:
        raise typer.BadParameter("give --email ID (repeatable) or --all-parked")
    notifier, read_model = _open(ctx)
    failed = 0
    try:
        ids = list(email or [])
        if all_parked:
            with read_model.engine.connect() as conn:
                ids += views.parked(conn, tenant, limit=100_000)
        actor = f"operator:{by}"
        with context.caused_by(actor, tenant):
            for email_id in ids:
                if dry_run:
                    console.print(f"would retry {email_id}")
                    continue
                try:
                    notifier.retry(email_id, actor, tenant)
                    console.print(f"retried {email_id}")
                except (NotParked, NotFound, IntegrityError) as error:  # say which, go on
                    failed += 1
                    console.print(f"[red]not retried {email_id}: {error or type(error).__name__}[/red]")
    finally:
        notifier.close()
        read_model.close()
    console.print(f"{len(ids) - failed} of {len(ids)} {'to retry' if dry_run else 'retried'}")
    if failed:
        raise typer.Exit(1)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
