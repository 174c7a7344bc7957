"""The versioned contracts of every message on the bus (pydantic v2 models).

`contracts.topics` names the topics, `contracts.accounts` and `contracts.bookings` hold the
messages, `contracts.catalog` decodes raw bytes against an allow-list, and `contracts/schemas/`
holds the generated JSON Schemas that are committed and checked by the tests.
"""

from contracts.envelope import Actor, Command, IntegrationEvent, Message

__all__ = ["Actor", "Command", "IntegrationEvent", "Message"]
