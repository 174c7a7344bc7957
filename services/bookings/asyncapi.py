"""The AsyncAPI document of the bookings service's channels: docs/asyncapi/bookings.yaml.

    python -m services.bookings.asyncapi          # check: exit 1 if the committed file is stale
    python -m services.bookings.asyncapi --write  # (re)write it

faststream generates it from the service's own composition root (`bootstrap`): the topics and
consumer groups it really subscribes to, and the channels its relay publishes on (declared in
`integration.declare_publications`). faststream documents a subscriber's payload from its
handler's signature, but the inbox takes raw bytes (decoding is its job, so that what cannot
be decoded is dead-lettered and answered); the messages each inbox channel accepts are filled
in here from the service's handlers, with the same JSON Schemas as `contracts/schemas/`.
"""

from __future__ import annotations

import copy
import sys
import tempfile
from pathlib import Path
from typing import Any, Union

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from faststream import FastStream
from faststream.specification import AsyncAPI
from pydantic import TypeAdapter

from backbone.credentials import public_pem
from backbone.signing import H_KEY_ID, H_SIGNATURE, key_settings
from backbone.signing import SIGNED_HEADERS as SIGNED
from contracts.envelope import Command
from contracts.personal import SubjectKey, subject_keys_topic
from contracts.topics import ACCOUNTS_EVENTS, BOOKINGS_COMMANDS
from services.bookings.bootstrap import bootstrap
from services.bookings.handlers import HANDLERS
from services.bookings.settings import BookingsSettings

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "asyncapi" / "bookings.yaml"
REFS = "#/components/schemas/{model}"

DESCRIPTION = (
    "The bookings service on the Kafka bus. Other services place and change bookings by "
    "publishing commands on `bookings.commands` (key: the booking id; the tenant id for custom "
    "statuses), and read one outcome per command on `bookings.command-outcomes`, correlated by "
    "`command_id`. A command sent again with the same `command_id` is applied once and answered "
    "again with the same outcome. Invalid commands are answered too (`rejected`, `final: false`) "
    "and kept in `bookings.dead-letters`. Every topic and consumer group carries the deployment's "
    "`TOPIC_NAMESPACE` as a prefix (`<namespace>.bookings.commands`) when one is set. Every "
    "record is signed (Ed25519; headers `signature` and `signature-key-id`): commands with the "
    "publisher's key, registered with bookings for tenants and capabilities "
    "(`POST /v1/admin/publishers`); events with their owner's bus key. A command that is "
    "unsigned or not allowed is rejected with a final reason code and dead-lettered. The guide "
    "for publishers: docs/publishing-booking-commands.md."
)

SIGNED_HEADERS = {
    "type": "object",
    "required": [H_SIGNATURE, H_KEY_ID],
    "properties": {
        H_SIGNATURE: {
            "type": "string",
            "description": "base64 Ed25519 signature of the UTF-8 compact JSON "
            '`["booking-accounts/bus/v1", [[name, value or null] for each signed header], '
            "sha256 hex of the body]`; signed headers, in this order: " + ", ".join(SIGNED) + ".",
        },
        H_KEY_ID: {
            "type": "string",
            "pattern": "^[0-9a-f]{16}$",
            "description": "The signing key's id: the first 16 hex digits of the SHA-256 of its "
            "32-byte public key.",
        },
    },
}

CHANNELS = {
    BOOKINGS_COMMANDS: "Commands from other services: place a booking, record a payment, change "
    "its status, modify, cancel (staff may override the customer rules), void; define or retire a "
    "tenant's custom status. Each is applied at most once per command_id and answered on "
    "bookings.command-outcomes with `accepted` (and the booking's version) or `rejected` (with a "
    "reason_code). Customer details are sent in the clear: give the topic a retention that fits "
    "your erasure policy.",
    subject_keys_topic("accounts"): "The keys of the accounts service's data subjects (and their "
    "erasures), to open the personal data of its events.",
    ACCOUNTS_EVENTS: "The accounts service's events that bookings acts on: accounts and their "
    "verified email (the customer's history), revoked sessions, archived accounts, redactions "
    "(erasure), and each tenant's settings (the customer rules). Exactly once, in order per key.",
}


def _handled(topic: str) -> list[type]:
    if topic == subject_keys_topic("accounts"):
        return [SubjectKey]
    if topic == BOOKINGS_COMMANDS:
        return [m for m in HANDLERS if issubclass(m, Command)]
    return [m for m in HANDLERS if not issubclass(m, Command)]


def build() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "session.pub.pem"
        key.write_bytes(public_pem(Ed25519PrivateKey.generate()))
        settings = BookingsSettings(
            store="memory",
            data_dir=Path(tmp),
            session_public_key_file=key,
            kafka_bootstrap_servers="localhost:9092",
            topic_namespace="",
            **key_settings(Path(tmp) / "bus", "bookings"),
        )
        service = bootstrap(settings)
        try:
            specification = AsyncAPI(
                title="booking-accounts: bookings",
                version="1.0.0",
                description=DESCRIPTION,
                license={"name": "Apache-2.0"},
            )
            document = FastStream(service.broker, specification=specification).schema.to_specification()
            document = document.to_jsonable()
        finally:
            service.app.close()
            if service.read_model is not None:
                service.read_model.close()
    _fill_inbox_payloads(document)
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


def _fill_inbox_payloads(document: dict[str, Any]) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name, channel in document["channels"].items():
        topic = channel["address"]
        if topic not in CHANNELS:
            continue
        channel["description"] = CHANNELS[topic]
        models = _handled(topic)
        adapter = TypeAdapter(Union[tuple(models)])  # noqa: UP007 - a runtime tuple of models
        schema = adapter.json_schema(ref_template=REFS)
        schemas.update(schema.pop("$defs", {}))
        schemas[f"{name}:Payload"] = {"title": f"{topic} messages", **schema}
        for message in channel["messages"].values():
            key = message["$ref"].rsplit("/", 1)[-1]
            document["components"]["messages"][key]["payload"] = {
                "$ref": REFS.format(model=f"{name}:Payload")
            }
            document["components"]["messages"][key]["headers"] = copy.deepcopy(
                SIGNED_HEADERS
            )  # no YAML anchors
    schemas.pop("EmptyPayload", None)
    # faststream keeps publishers in no stable order: sort, so that the file only changes with
    # the service.
    for section in (document, document["components"]):
        for key in ("channels", "operations", "messages", "schemas"):
            if key in section:
                section[key] = dict(sorted(section[key].items()))


def main(argv: list[str]) -> int:
    text = build()
    if "--write" in argv:
        DOCUMENT.parent.mkdir(parents=True, exist_ok=True)
        DOCUMENT.write_text(text)
        return 0
    if not DOCUMENT.exists() or DOCUMENT.read_text() != text:
        print(f"{DOCUMENT} is stale: run `python -m services.bookings.asyncapi --write`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
