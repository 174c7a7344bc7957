"""Topic names. A topic belongs to the service that writes it; everybody else only reads."""

ACCOUNTS_EVENTS = "accounts.events"
"""Events of the accounts service: claims, verifications, settings. Key: account id (or tenant)."""

BOOKINGS_EVENTS = "bookings.events"
"""Events of the bookings service: placed, cancelled, modified. Key: booking id."""

BOOKINGS_COMMANDS = "bookings.commands"
"""Commands other services publish to the bookings service. Key: booking id."""

BOOKINGS_COMMAND_OUTCOMES = "bookings.command-outcomes"
"""One outcome per command received (accepted or rejected), correlated by command_id."""


def dead_letters(service: str) -> str:
    """The dead-letter topic of one consuming service: what it could not decode or apply."""
    return f"{service}.dead-letters"


ALL = (ACCOUNTS_EVENTS, BOOKINGS_EVENTS, BOOKINGS_COMMANDS, BOOKINGS_COMMAND_OUTCOMES)

PUBLISHERS = "*publishers*"
"""The writer of a commands topic: the command publishers registered with its service."""

SERVICES = ("accounts", "bookings", "notifier")


def owners() -> dict[str, str]:
    """Who alone may write each topic (contract names): consumers check the signature against
    it (`backbone.signing`). Keys topics: `contracts.personal.subject_keys_topic`."""
    return {
        ACCOUNTS_EVENTS: "accounts",
        BOOKINGS_EVENTS: "bookings",
        BOOKINGS_COMMAND_OUTCOMES: "bookings",
        BOOKINGS_COMMANDS: PUBLISHERS,
        **{f"{service}.subject-keys": service for service in SERVICES},
    }
