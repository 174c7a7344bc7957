"""The committed JSON Schemas of the contracts, one file per message type and version.

    python -m contracts.schemafiles          # check: exit 1 if a file is missing or stale
    python -m contracts.schemafiles --write  # (re)write the files of the current versions

A file never changes once committed: a model change that alters its schema must come with a
new `schema_version` (a new file). `tests/contracts` enforces this.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from contracts.catalog import ALL_COMMANDS, ALL_EVENTS
from contracts.envelope import Message

SCHEMA_DIR = Path(__file__).parent / "schemas"


def schema_path(model: type[Message]) -> Path:
    folder = "events" if model.KIND == "event" else "commands"
    return SCHEMA_DIR / folder / f"{model.type_name()}.v{model.version()}.json"


def render(model: type[Message]) -> str:
    schema = model.model_json_schema(mode="validation")
    schema["$id"] = f"urn:booking-accounts:{model.KIND}:{model.type_name()}:v{model.version()}"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def check() -> list[str]:
    """Problems with the committed files, as sentences; empty when all is in order."""
    problems = []
    for model in (*ALL_EVENTS, *ALL_COMMANDS):
        path = schema_path(model)
        if not path.exists():
            problems.append(
                f"{path.relative_to(SCHEMA_DIR.parent.parent)} is missing: run "
                "`python -m contracts.schemafiles --write` and commit it"
            )
        elif path.read_text() != render(model):
            problems.append(
                f"{model.__name__} v{model.version()} no longer matches its committed schema "
                f"{path.name}: a changed contract needs a new schema_version"
            )
    return problems


def write() -> None:
    for model in (*ALL_EVENTS, *ALL_COMMANDS):
        path = schema_path(model)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.read_text() != render(model):
            raise SystemExit(f"refusing to overwrite {path}: bump {model.__name__}'s schema_version")
        path.write_text(render(model))


if __name__ == "__main__":
    if "--write" in sys.argv:
        write()
    problems = check()
    for problem in problems:
        print(problem, file=sys.stderr)
    sys.exit(1 if problems else 0)
