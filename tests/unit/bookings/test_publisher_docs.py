"""The documentation for the teams that publish commands stays true: the AsyncAPI document is
regenerated from the service, and the guide names every command, event, reason code and
transition the code has."""

from __future__ import annotations

from pathlib import Path

import yaml

from contracts import bookings as contract
from services.bookings import asyncapi, statuses
from services.bookings.errors import REASON_CODES
from services.bookings.publishers import CAPABILITIES, REFUSAL_CODES

GUIDE = Path(__file__).resolve().parents[3] / "docs" / "publishing-booking-commands.md"


def test_the_asyncapi_document_is_up_to_date():
    assert asyncapi.DOCUMENT.read_text() == asyncapi.build(), (
        "docs/asyncapi/bookings.yaml is stale: run `python -m services.bookings.asyncapi --write`"
    )


def test_the_asyncapi_document_describes_every_command_and_event():
    document = yaml.safe_load(asyncapi.DOCUMENT.read_text())
    schemas = document["components"]["schemas"]

    def resolve(ref: str) -> dict:
        node = document
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        return node

    refs = []

    def collect(node):
        if isinstance(node, dict):
            refs.extend(v for k, v in node.items() if k == "$ref")
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(document)
    for ref in refs:
        resolve(ref)  # every reference points somewhere
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert {
        "bookings.commands",
        "bookings.command-outcomes",
        "bookings.events",
        "accounts.events",
    } <= addresses
    commands = schemas["bookings.inbox:bookings.commands:Payload"]["anyOf"]
    assert {c["$ref"].rsplit("/", 1)[-1] for c in commands} == {m.__name__ for m in contract.COMMANDS}
    for event in contract.EVENTS:
        assert event.__name__ in schemas


def test_the_guide_names_every_command_event_and_reason_code():
    guide = GUIDE.read_text()
    for model in (*contract.COMMANDS, *contract.EVENTS):
        assert f"`{model.type_name()}" in guide, model.type_name()
    for code in (*REASON_CODES, *REFUSAL_CODES, *CAPABILITIES):
        assert f"`{code}`" in guide, code


def test_the_guide_shows_the_transition_table_of_the_code():
    lines = GUIDE.read_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith("| from \\ to |")))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")][1:]
    shown = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        shown[cells[0]] = {target for target, mark in zip(header, cells[1:], strict=True) if mark == "✓"}
    assert shown == {current: set(targets) for current, targets in statuses.TRANSITIONS.items()}
