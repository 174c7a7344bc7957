"""The envelope every message on the bus carries, and the value types messages share.

A message is either an *event* (something that happened in the service that owns it, past
tense) or a *command* (a request to the service that owns the topic, imperative). Both are
self-describing: the JSON body names its type and schema version, so a consumer never needs
a header, a class path or anything else from the sender to decode it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, ClassVar, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    PlainSerializer,
    StringConstraints,
)

TenantId = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$"),
    Field(description="The business (tenant) the message belongs to: a lowercase slug."),
]


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[
    AwareDatetime,
    AfterValidator(_to_utc),
    Field(description="An instant, with its offset; normalised to UTC."),
]

Money = Annotated[
    Decimal,
    Field(max_digits=14, decimal_places=2, ge=0, description="An amount, as a decimal string."),
    PlainSerializer(lambda value: f"{value:.2f}", return_type=str, when_used="json"),
]

Currency = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Z]{3}$"),
    Field(description="ISO 4217 currency code."),
]

# Email addresses are validated (syntax and normalisation of the domain) by email-validator,
# without a DNS lookup, and stored lower-cased: one comparison rule everywhere.
Email = Annotated[EmailStr, AfterValidator(lambda value: value.lower())]

ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
LongText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)]


class Value(BaseModel):
    """A value inside a message: immutable, and strict about unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Actor(Value):
    """Who caused something: a customer, a staff member, or a service acting on its own."""

    kind: Literal["customer", "staff", "service"]
    id: Annotated[str, StringConstraints(min_length=1, max_length=100)]

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"

    @classmethod
    def parse(cls, text: str) -> Actor:
        kind, _, ident = text.partition(":")
        return cls.model_validate({"kind": kind, "id": ident})


class Message(BaseModel):
    """Base of every message on the bus. Subclasses pin their type name and schema version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    KIND: ClassVar[Literal["event", "command"]]

    tenant_id: TenantId
    correlation_id: UUID = Field(
        description="Shared by every message caused, directly or not, by one original request."
    )
    causation_id: UUID | None = Field(
        default=None, description="The id of the message (event or command) that caused this one."
    )

    @classmethod
    def type_name(cls) -> str:
        """The type name a concrete message pins with a literal default."""
        return cls.model_fields[f"{cls.KIND}_type"].default

    @classmethod
    def version(cls) -> int:
        return cls.model_fields["schema_version"].default

    @property
    def message_id(self) -> UUID:
        raise NotImplementedError

    @property
    def key(self) -> str:
        """The Kafka key: the id of the aggregate the message is about, so it stays in order."""
        raise NotImplementedError


class IntegrationEvent(Message):
    """Something that happened, published by the service that owns it."""

    KIND: ClassVar[Literal["event", "command"]] = "event"

    event_id: UUID = Field(description="Unique per event; a republished event keeps its id.")
    event_type: str
    schema_version: int
    occurred_at: UtcDatetime

    @property
    def message_id(self) -> UUID:
        return self.event_id


class Command(Message):
    """A request to the service that owns the topic. Applied at most once per command_id."""

    KIND: ClassVar[Literal["event", "command"]] = "command"

    command_id: UUID = Field(
        description="Chosen by the sender; a repeated command_id is applied once and answered "
        "with the same outcome."
    )
    command_type: str
    schema_version: int
    issued_at: UtcDatetime
    issued_by: Annotated[str, StringConstraints(min_length=1, max_length=100)] = Field(
        description="The service (or tool) that publishes the command."
    )

    @property
    def message_id(self) -> UUID:
        return self.command_id


def now() -> datetime:
    return datetime.now(UTC)
