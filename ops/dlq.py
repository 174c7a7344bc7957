"""Dead letters: list, show, retry (as they were or fixed) and discard, every action recorded.

A dead letter is a record of a service's dead-letter topic (`backbone.deadletters`): the
original message, byte for byte, with why and where it failed in its headers. It is named by
its place in that topic, `<partition>:<offset>` (with the topic in front when a service has
more than one).

* Retry publishes the message again to the topic it came from, with its key and headers, as it
  was or with a fixed body, after checking the body against what the consumer accepts (the
  check can be overridden). The upstream-position headers are left out, so the consumer applies
  it rather than taking it for a copy it has seen; commands are still applied once per
  `command_id` (a non-final outcome may be tried again).
* Discard says it will not be retried, and why.
* Each action is recorded in the consuming service's event store as a `DeadLetterCase` event,
  with who (`staff:<operator>`), when and what (where it was republished, a hash of the body
  sent, the operator's note): durable, and visible to audit tooling like any other event.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from faststream.kafka import KafkaBroker
from pydantic import ValidationError

from backbone import context, deadletters
from backbone.audit import AuditLog
from backbone.bus import H_SOURCE, H_SOURCE_POSITION, H_TENANT
from backbone.deadletters import DeadLetterCase
from backbone.domain import DomainError
from backbone.inbox import Inbox
from backbone.signing import Signer
from contracts.catalog import DecodeError
from contracts.personal import SubjectKey
from ops.config import OpsError
from ops.kafka import Kafka
from ops.registry import ServiceHandle

_DLQ_HEADERS = {
    deadletters.H_REASON,
    deadletters.H_DETAIL,
    deadletters.H_TOPIC,
    deadletters.H_PARTITION,
    deadletters.H_OFFSET,
    deadletters.H_CONSUMER,
    deadletters.H_AT,
}


@dataclass
class Letter:
    id: str  # "<partition>:<offset>", or "<topic>:<partition>:<offset>"
    topic: str
    partition: int
    offset: int
    reason: str
    detail: str
    original: str  # "topic/partition/offset" the consumer could not apply
    consumer: str
    dead_lettered_at: str
    status: str = DeadLetterCase.OPEN
    actions: list[dict[str, Any]] = field(default_factory=list)  # who, when, what
    key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None  # the message as text (shown by `dlq show`)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Action:
    letter: str
    action: str  # "retried" | "discarded"
    dry_run: bool
    by: str
    republished_as: str | None = None
    fixed: bool = False
    body_sha256: str | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def letters(handle: ServiceHandle, kafka: Kafka, include_handled: bool = True) -> list[Letter]:
    """Every dead letter of the service, oldest first per partition."""
    found = []
    audit = AuditLog(handle.app)
    several = len(handle.dead_letter_topics) > 1
    for topic in handle.dead_letter_topics:
        tps = kafka.partitions(topic)
        async for batch in kafka.read(await kafka.beginnings(tps), await kafka.ends(tps)):
            for record in batch:
                letter = await asyncio.to_thread(_letter, audit, record, several)
                if include_handled or letter.status == DeadLetterCase.OPEN:
                    found.append(letter)
    return found


async def letter(handle: ServiceHandle, kafka: Kafka, letter_id: str) -> tuple[Letter, Any]:
    """One dead letter, with its record."""
    topic, partition, offset = _parse(handle, letter_id)
    record = await kafka.fetch(topic, partition, offset)
    if record is None:
        raise OpsError(f"no dead letter {letter_id} in {topic} (removed by retention, or never there)")
    several = len(handle.dead_letter_topics) > 1
    found = await asyncio.to_thread(_letter, AuditLog(handle.app), record, several)
    found.body = (record.value or b"").decode(errors="replace")
    return found, record


async def retry(
    handle: ServiceHandle,
    kafka: Kafka,
    broker: KafkaBroker | None,
    letter_id: str,
    *,
    operator: str,
    body: bytes | None = None,
    note: str | None = None,
    force: bool = False,
    again: bool = False,
    dry_run: bool = False,
) -> Action:
    found, record = await letter(handle, kafka, letter_id)
    if found.status == DeadLetterCase.DISCARDED:
        raise OpsError(f"dead letter {letter_id} was discarded; it cannot be retried")
    if found.status == DeadLetterCase.RETRIED and not again:
        raise OpsError(
            f"dead letter {letter_id} was retried already (see `dlq show`); --again to retry it again"
        )
    sent = body if body is not None else (record.value or b"")
    if not force:
        problem = _refusal(handle, found, sent)
        if problem:
            raise OpsError(f"the consumer would refuse this body ({problem}): fix it, or --force")
    action = Action(
        found.id,
        DeadLetterCase.RETRIED,
        dry_run,
        f"staff:{operator}",
        fixed=body is not None,
        body_sha256=hashlib.sha256(sent).hexdigest(),
        note=note,
    )
    topic = found.original.rsplit("/", 2)[0]
    if dry_run:
        action.republished_as = f"{topic}/?/?"
        return action
    assert broker is not None
    headers = {
        k: v
        for k, v in found.headers.items()
        if k not in _DLQ_HEADERS and k not in (H_SOURCE, H_SOURCE_POSITION)
    }
    headers[deadletters.H_RETRY_OF] = f"{found.topic}/{found.partition}/{found.offset}"
    # Signed with the consuming service's own bus key (the owner's signature no longer covers
    # it): its consumer believes its own operators' retries, on the topics it reads.
    signer = Signer.load(handle.name, handle.settings.bus_key_file or Path("BUS_KEY_FILE unset"))
    headers = signer.sign(sent, headers)
    metadata = await broker.publish(sent, topic, key=record.key, headers=headers)
    action.republished_as = f"{metadata.topic}/{metadata.partition}/{metadata.offset}"
    await asyncio.to_thread(_record, handle, found, action)
    return action


async def discard(
    handle: ServiceHandle, kafka: Kafka, letter_id: str, *, operator: str, reason: str, dry_run: bool = False
) -> Action:
    found, _ = await letter(handle, kafka, letter_id)
    action = Action(found.id, DeadLetterCase.DISCARDED, dry_run, f"staff:{operator}", note=reason)
    if found.status == DeadLetterCase.DISCARDED:
        raise OpsError(f"dead letter {letter_id} was discarded already")
    if not dry_run:
        await asyncio.to_thread(_record, handle, found, action)
    return action


# ------------------------------------------------------------------------------ internals


def _letter(audit: AuditLog, record: Any, several: bool) -> Letter:
    headers = {k: v.decode(errors="replace") for k, v in record.headers or ()}
    prefix = f"{record.topic}:" if several else ""
    found = Letter(
        id=f"{prefix}{record.partition}:{record.offset}",
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        reason=headers.get(deadletters.H_REASON, "unknown"),
        detail=headers.get(deadletters.H_DETAIL, ""),
        original="/".join(
            headers.get(h, "?") for h in (deadletters.H_TOPIC, deadletters.H_PARTITION, deadletters.H_OFFSET)
        ),
        consumer=headers.get(deadletters.H_CONSUMER, "unknown"),
        dead_lettered_at=headers.get(deadletters.H_AT, ""),
        key=record.key.decode(errors="replace") if record.key else None,
        headers=headers,
    )
    case_id = DeadLetterCase.create_id(record.topic, record.partition, record.offset)
    for event in audit.history(case_id):
        if event.event_type.endswith(".Opened"):
            continue
        found.status = (
            DeadLetterCase.RETRIED if event.event_type.endswith(".Retried") else DeadLetterCase.DISCARDED
        )
        found.actions.append(
            {"action": found.status, "by": event.actor, "at": event.occurred_at, **event.data}
        )
    return found


def _parse(handle: ServiceHandle, letter_id: str) -> tuple[str, int, int]:
    parts = letter_id.rsplit(":", 2)
    topics = handle.dead_letter_topics
    if not topics:
        raise OpsError(f"{handle.name} consumes nothing, so it has no dead letters")
    try:
        if len(parts) == 3:
            topic, partition, offset = parts[0], int(parts[1]), int(parts[2])
        elif len(topics) == 1:
            topic, partition, offset = topics[0], int(parts[0]), int(parts[1])
        else:
            raise OpsError(
                f"{handle.name} has several dead-letter topics: name it, <topic>:<partition>:<offset>"
            )
    except (ValueError, IndexError):
        raise OpsError(f"{letter_id!r} is not a dead letter id (<partition>:<offset>)") from None
    if topic not in topics and handle.settings.topic(topic) in topics:
        topic = handle.settings.topic(topic)
    if topic not in topics:
        raise OpsError(f"{topic} is not a dead-letter topic of {handle.name} ({', '.join(topics)})")
    return topic, partition, offset


def _refusal(handle: ServiceHandle, found: Letter, body: bytes) -> str | None:
    """Why the consumer that dead-lettered this message would refuse `body`; None if it takes it."""
    try:
        consumer = handle.consumer(found.consumer)
    except OpsError:
        return None  # a consumer this version does not know: nothing to check against
    try:
        if isinstance(consumer, Inbox):
            consumer.catalog.decode(body)
        else:
            SubjectKey.model_validate_json(body)
    except DecodeError as error:
        return f"{error.reason}: {error.detail}"
    except ValidationError as error:
        return str(error).splitlines()[0]
    return None


def _record(handle: ServiceHandle, found: Letter, action: Action) -> None:
    case_id = DeadLetterCase.create_id(found.topic, found.partition, found.offset)
    tenant = found.headers.get(H_TENANT)
    with context.caused_by(action.by, tenant if tenant else None):
        case = _case(handle, case_id)
        if case is None:
            case = DeadLetterCase(
                topic=found.topic,
                partition=found.partition,
                offset=found.offset,
                reason=found.reason,
                original=found.original,
            )
        try:
            if action.action == DeadLetterCase.RETRIED:
                case.retry(action.republished_as or "", action.fixed, action.body_sha256 or "", action.note)
            else:
                case.discard(action.note or "")
        except DomainError as refused:
            raise OpsError(str(refused)) from None
        handle.app.save(case)


def _case(handle: ServiceHandle, case_id: Any) -> DeadLetterCase | None:
    if not handle.app.recorder.select_events(case_id, limit=1):
        return None
    return handle.app.repository.get(case_id)


def pretty(body: str | None) -> str:
    """A message body for reading: indented if it is JSON, as it is otherwise."""
    try:
        return json.dumps(json.loads(body or ""), indent=2, ensure_ascii=False)
    except ValueError:
        return body or ""
