"""The audit commands: `history`, `export`, `verify` (what auditors see: backbone.audit)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated
from uuid import UUID

import typer
from rich.table import Table

from backbone.audit import AuditLog, AuditRecord, folded
from backbone.auditexport import Export, Selection
from backbone.auditexport import verify as verify_export
from ops import output, registry
from ops.commands import Json, Service, deployment, handles_errors
from ops.config import OpsError
from ops.output import emit_json, note, parse_time, progress


@handles_errors
def history(
    ctx: typer.Context,
    aggregate_id: Annotated[UUID, typer.Argument(help="An account, booking, email, ... id.")],
    service: Annotated[str | None, typer.Option(help="Look in this service only.")] = None,
    reveal: Annotated[
        bool,
        typer.Option("--reveal", help="Open personal data with the service's vault (erased stays erased)."),
    ] = False,
    json_: Json = False,
) -> None:
    """The full ordered history of one aggregate: every event, what, when, who, correlation
    and causation. Personal data stays sealed unless --reveal."""
    found = []
    with registry.services(deployment(ctx), [service] if service else ()) as handles:
        for handle in handles:
            found += [(handle.name, r) for r in AuditLog(handle.app, reveal=reveal).history(aggregate_id)]
    if not found:
        raise OpsError(f"no aggregate {aggregate_id} in {service or 'any service'}")
    if json_:
        emit_json([{"service": name, **r.as_dict()} for name, r in found])
        return
    output.out.print(history_table(f"{found[0][1].aggregate_type} {aggregate_id}", found, output.out.width))


def history_table(title: str, found: list[tuple[str, AuditRecord]], width: int) -> Table:
    """One row per event, as tall as its data has fields, in `width` columns: personal values
    marked sealed or erased, each field on one line (cut with …), ids by their first 8
    characters (`--json` has them whole)."""
    shown = Table(title=title, title_justify="left", show_edge=False, header_style="bold")
    shown.add_column("service", no_wrap=True)
    shown.add_column("v", no_wrap=True, justify="right")
    shown.add_column("event", no_wrap=True)
    shown.add_column("at, by, ids", overflow="fold", max_width=22)
    shown.add_column("data", no_wrap=True, overflow="ellipsis")
    for name, r in found:
        shown.add_row(
            name,
            str(r.version),
            r.event_type,
            "\n".join(
                (
                    f"{r.occurred_at[:19]}Z",
                    r.actor,
                    f"corr  {_short(r.correlation_id)}",
                    f"cause {_short(r.causation_id)}",
                )
            ),
            "\n".join(folded(r.data, max(24, width - 68))),
        )
    return shown


def _short(identifier: str | None) -> str:
    return identifier[:8] if identifier else "-"


@handles_errors
def export(
    ctx: typer.Context,
    service: Service,
    output_file: Annotated[Path, typer.Option("--output", "-o", help="File to write ('-': stdout).")] = Path(
        "-"
    ),
    from_position: Annotated[int, typer.Option("--from", min=1, help="First position of the log.")] = 1,
    to_position: Annotated[
        int | None, typer.Option("--to", min=1, help="Last position (default: head).")
    ] = None,
    since: Annotated[str | None, typer.Option(help="Events at or after this time (ISO 8601).")] = None,
    until: Annotated[str | None, typer.Option(help="Events before this time (ISO 8601).")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's events.")] = None,
    key_file: Annotated[
        Path | None, typer.Option(help="Seal the chain with this secret (HMAC-SHA256).")
    ] = None,
    json_: Json = False,
) -> None:
    """Stream a service's event log (or a range, a time span, a tenant) as JSON Lines with a
    hash chain. Keep the head hash it prints, for `verify --expect-head`."""
    selection = Selection(
        from_position, to_position, parse_time(since, "--since"), parse_time(until, "--until"), tenant
    )
    key = _key(key_file)
    to_stdout = output_file == Path("-")
    with registry.service(deployment(ctx), service) as handle:
        log = AuditLog(handle.app)
        total = max((to_position or log.head()) - from_position + 1, 0)
        with progress(f"export {service}", quiet=to_stdout or json_) as update:
            job = Export(
                log, service, selection, key, on_progress=lambda p: update(p - from_position + 1, total)
            )
            target = sys.stdout if to_stdout else output_file.open("w", encoding="utf-8")
            try:
                target.writelines(job.lines())
            finally:
                if not to_stdout:
                    target.close()
    summary = {
        "service": service,
        "records": job.records,
        "last_position": job.last_position,
        "head": job.head,
    }
    if json_ and not to_stdout:
        emit_json(summary)
    else:
        note(f"exported {job.records} events of {service}; head hash {job.head}")


@handles_errors
def verify(
    file: Annotated[Path, typer.Argument(help="An export ('-': stdin).")],
    key_file: Annotated[Path | None, typer.Option(help="The secret the export was sealed with.")] = None,
    expect_head: Annotated[str | None, typer.Option(help="The head hash printed when exporting.")] = None,
    json_: Json = False,
) -> None:
    """Check an export: exit 0 if it is intact, 1 with where it breaks (altered, removed,
    reordered, inserted, truncated) if not."""
    key = _key(key_file)
    try:
        source = sys.stdin if file == Path("-") else file.open(encoding="utf-8")
    except OSError as error:
        raise OpsError(f"cannot read {file}: {error}") from None
    with source:
        result = verify_export(source, key=key, expect_head=expect_head)
    if json_:
        emit_json(result.as_dict())
    elif result.ok:
        output.out.print(f"intact: {result.records} records, head {result.head}")
    else:
        output.out.print(
            f"BROKEN at line {result.line} (record {result.seq}, position {result.position}): "
            f"{result.problem}: {result.detail}"
        )
    if not result.ok:
        raise typer.Exit(1)


def _key(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        key = path.read_bytes().strip()
    except OSError as error:
        raise OpsError(f"cannot read the key file {path}: {error}") from None
    if len(key) < 16:
        raise OpsError(f"the key in {path} is too short to be a secret (16 bytes at least)")
    return key
