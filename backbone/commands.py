"""Commands from other services: applied once per `command_id`, always answered.

A `CommandReceipt` aggregate per command id remembers what became of the command. It is
recorded in the same transaction as the command's effects, so "applied" and "remembered"
cannot drift apart. When the same command id comes again (a publisher retrying, a replay of
the topic) the receipt answers with the outcome it already has: one effect, identical answers.

Outcomes are *final* (accepted, or rejected by a business rule: sending it again changes
nothing) or not (the body was invalid, or applying it failed unexpectedly): a non-final
command may be sent again with the same id and is then applied afresh.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from pydantic import BaseModel, ConfigDict, ValidationError

from backbone.domain import Aggregate, DomainError, event
from backbone.unitofwork import UnitOfWork
from contracts.envelope import Command, TenantId

_RECEIPT_IDS = uuid5(NAMESPACE_URL, "urn:booking-accounts:command-receipts")


@dataclass(frozen=True)
class Accepted:
    """What a command handler returns: the aggregate it changed and its new version."""

    aggregate_id: UUID
    aggregate_version: int


@dataclass(frozen=True)
class Outcome:
    outcome: str  # "accepted" | "rejected"
    final: bool = True
    aggregate_id: str | None = None
    aggregate_version: int | None = None
    reason_code: str | None = None
    message: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))  # (flat: `asdict`'s recursive copy cost more than the rest)

    @classmethod
    def rejected(cls, code: str, message: str, *, final: bool = True) -> Outcome:
        return cls("rejected", final, reason_code=code, message=message)


class CommandReceipt(Aggregate):
    @staticmethod
    @functools.lru_cache(maxsize=4096)  # asked for twice per command: by the batch's preload, then
    def create_id(command_id: UUID) -> UUID:  # by `apply_command`
        return uuid5(_RECEIPT_IDS, str(command_id))

    @event("Received")
    def __init__(
        self,
        command_id: UUID,
        command_type: str,
        issued_by: str,
        tenant_id: str,
        fingerprint: str,
        outcome: dict[str, Any],
    ) -> None:
        self.command_id = command_id
        self.command_type = command_type
        self.issued_by = issued_by
        self.tenant_id = tenant_id
        self.fingerprint = fingerprint
        self.outcome = outcome

    @event("Answered")
    def answer(self, fingerprint: str, outcome: dict[str, Any]) -> None:
        """Answered again: a repeat (same outcome) or a fresh attempt after a non-final one."""
        if not self.is_final:
            self.fingerprint = fingerprint
            self.outcome = outcome

    @property
    def is_final(self) -> bool:
        return bool(self.outcome.get("final", True))


CommandHandler = Callable[[Any, UnitOfWork], Accepted]


def fingerprint(command: Command) -> str:
    # issued_at is left out: a publisher retrying the same command may stamp it anew.
    body = command.model_dump_json(exclude={"issued_at"}).encode()
    return hashlib.sha256(body).hexdigest()


def apply_command(command: Command, uow: UnitOfWork, handler: CommandHandler) -> None:
    """Apply a command at most once and record its outcome on its receipt."""
    receipt = uow.get(CommandReceipt, CommandReceipt.create_id(command.command_id))
    print_ = fingerprint(command)
    if receipt is not None and receipt.is_final:
        if receipt.fingerprint == print_:
            receipt.answer(print_, receipt.outcome)
        else:
            reused = Outcome.rejected(
                "command_id_reused",
                "this command_id was already used for a different command; use a new id",
            )
            receipt.answer(print_, reused.as_dict())
        return
    try:
        with uow.scope():
            accepted = handler(command, uow)
        outcome = Outcome(
            "accepted",
            aggregate_id=str(accepted.aggregate_id),
            aggregate_version=accepted.aggregate_version,
        )
    except DomainError as rejection:
        outcome = Outcome.rejected(rejection.code, str(rejection), final=rejection.final)
    _record(
        uow,
        receipt,
        command.command_id,
        command.command_type,
        command.issued_by,
        command.tenant_id,
        print_,
        outcome,
    )


class CommandIdentity(BaseModel):
    """What must be readable in a command's body for it to be answered at all."""

    model_config = ConfigDict(extra="ignore")

    command_id: UUID
    command_type: str
    issued_by: str
    tenant_id: TenantId
    correlation_id: UUID | None = None


def record_failure(uow: UnitOfWork, body: dict[str, Any] | None, code: str, message: str) -> bool:
    """Answer a command that could not be applied (invalid body, unexpected error) with a
    non-final rejection. Returns False when not even its identity can be read."""
    try:
        identity = CommandIdentity.model_validate(body or {})
    except ValidationError:
        return False
    receipt = uow.get(CommandReceipt, CommandReceipt.create_id(identity.command_id))
    if receipt is not None and receipt.is_final:
        receipt.answer("", receipt.outcome)
        return True
    outcome = Outcome.rejected(code, message, final=False)
    _record(
        uow,
        receipt,
        identity.command_id,
        identity.command_type,
        identity.issued_by,
        identity.tenant_id,
        "",
        outcome,
    )
    return True


def refuse_command(uow: UnitOfWork, body: dict[str, Any] | None, code: str, message: str) -> bool:
    """Answer a command that is refused before it is read (its publisher is not proven, or not
    allowed to send it) with a final rejection. A receipt that is final already keeps its
    outcome: a forged copy of an applied command changes nothing. False if the body does not
    even name a command."""
    try:
        identity = CommandIdentity.model_validate(body or {})
    except ValidationError:
        return False
    receipt = uow.get(CommandReceipt, CommandReceipt.create_id(identity.command_id))
    if receipt is not None and receipt.is_final:
        receipt.answer("", receipt.outcome)
        return True
    _record(
        uow,
        receipt,
        identity.command_id,
        identity.command_type,
        identity.issued_by,
        identity.tenant_id,
        "",
        Outcome.rejected(code, message),
    )
    return True


def _record(
    uow: UnitOfWork,
    receipt: CommandReceipt | None,
    command_id: UUID,
    command_type: str,
    issued_by: str,
    tenant_id: str,
    print_: str,
    outcome: Outcome,
) -> None:
    if receipt is None:
        uow.add(
            CommandReceipt(
                command_id=command_id,
                command_type=command_type,
                issued_by=issued_by,
                tenant_id=tenant_id,
                fingerprint=print_,
                outcome=outcome.as_dict(),
            )
        )
    else:
        receipt.answer(print_, outcome.as_dict())


def outcome_messages(app: Any, recorded: Any, service: str, topic: str) -> list[Any]:
    """The `CommandOutcome` each receipt event means (for the service's outbox translation)."""
    from backbone.bus import Outgoing  # local: keeps this module free of Kafka at import
    from backbone.outbox import envelope
    from contracts.outcomes import CommandOutcome

    domain_event = recorded.event
    if isinstance(domain_event, CommandReceipt.Received):
        receipt_fields = domain_event
    elif isinstance(domain_event, CommandReceipt.Answered):
        receipt_fields = app.repository.get(domain_event.originator_id)
    else:
        return []
    outcome = domain_event.outcome
    message = CommandOutcome(
        **envelope(recorded, service, tenant_id=receipt_fields.tenant_id),
        command_id=receipt_fields.command_id,
        command_type=receipt_fields.command_type,
        issued_by=receipt_fields.issued_by,
        outcome=outcome["outcome"],
        final=outcome.get("final", True),
        aggregate_id=outcome.get("aggregate_id"),
        aggregate_version=outcome.get("aggregate_version"),
        reason_code=outcome.get("reason_code"),
        message=outcome.get("message"),
    )
    return [Outgoing(topic, message)]
