"""The answer to a command, published by the service that received it.

Every command a service takes gets exactly one outcome per delivery: accepted (with the
resulting version of the aggregate it changed) or rejected (with a machine-readable reason
and a sentence for humans). A command repeated with the same `command_id` is applied once and
answered with the same outcome again, so a publisher can always retry safely and never has to
guess.
"""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field, StringConstraints

from contracts.envelope import IntegrationEvent, LongText

ReasonCode = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z][a-z0-9_]{1,63}$"),
    Field(description="Machine-readable reason, e.g. booking_not_found, schema_invalid."),
]


class CommandOutcome(IntegrationEvent):
    event_type: Literal["CommandOutcome"] = "CommandOutcome"
    schema_version: Literal[1] = 1

    command_id: UUID
    command_type: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    issued_by: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    outcome: Literal["accepted", "rejected"]
    aggregate_id: UUID | None = Field(
        default=None, description="The aggregate (e.g. booking) the command was about."
    )
    aggregate_version: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Its version after the command was applied."
    )
    reason_code: ReasonCode | None = None
    message: LongText | None = None
    final: bool = Field(
        default=True,
        description="False when the command failed for a reason that may go away (an invalid "
        "body that can be corrected, an internal error): it may be sent again with the same "
        "command_id.",
    )

    @property
    def key(self) -> str:
        return str(self.aggregate_id or self.command_id)
