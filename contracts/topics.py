"""Topic names, and who may read and write each (`rights`). A topic belongs to the service that
writes it; everybody else only reads."""

from dataclasses import dataclass

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


PUBLISHER_USER = "booking-publisher"
"""The Kafka user (principal) of the systems that publish booking commands (on the bus each is
still told apart by its signing key: `PUBLISHERS`, `backbone.signing`)."""

OPS_USER = "booking-ops"
"""The Kafka user (principal) of the operator tool (`booking-accounts`)."""


@dataclass(frozen=True)
class Rights:
    """What one principal of the bus reads and writes (contract topic names), and whether it
    consumes in groups of its own (named `<principal>.*`: `bookings.inbox`, ...)."""

    reads: tuple[str, ...]
    writes: tuple[str, ...]
    groups: bool = True


def subject_keys(service: str) -> str:
    """The compacted topic on which a service publishes its subjects' keys (and erasures)."""
    return f"{service}.subject-keys"


def rights() -> dict[str, Rights]:
    """Who reads and writes each topic: THE table. The services subscribe to what it says they
    read (a test holds them to it), and the Kafka ACLs (`backbone.kafkaacl`), the Strimzi
    `KafkaUser`s (deploy/k8s/kafka.yaml) and docs/operations.md are derived from it.

    Only the publishers write `bookings.commands`; each service writes only its own topics
    (its events, its subject keys, its dead letters) and reads only what it consumes. The
    operator tool reads everything and writes what it republishes (events from a service's
    store, dead letters retried), never commands: a retried command goes out with a
    publisher's principal."""
    table = {
        "accounts": Rights(
            reads=(BOOKINGS_EVENTS, subject_keys("bookings")),
            writes=(ACCOUNTS_EVENTS, subject_keys("accounts"), dead_letters("accounts")),
        ),
        "bookings": Rights(
            reads=(BOOKINGS_COMMANDS, ACCOUNTS_EVENTS, subject_keys("accounts")),
            writes=(
                BOOKINGS_EVENTS,
                BOOKINGS_COMMAND_OUTCOMES,
                subject_keys("bookings"),
                dead_letters("bookings"),
            ),
        ),
        "notifier": Rights(
            reads=(ACCOUNTS_EVENTS, BOOKINGS_EVENTS, subject_keys("accounts"), subject_keys("bookings")),
            writes=(dead_letters("notifier"),),
        ),
        PUBLISHER_USER: Rights(reads=(BOOKINGS_COMMAND_OUTCOMES,), writes=(BOOKINGS_COMMANDS,)),
    }
    every = all_topics()
    table[OPS_USER] = Rights(
        reads=every, writes=tuple(t for t in every if t != BOOKINGS_COMMANDS), groups=False
    )
    return table


def all_topics() -> tuple[str, ...]:
    """Every topic of the system (contract names), in a stable order."""
    return (
        *ALL,
        *(subject_keys(s) for s in ("accounts", "bookings")),
        *(dead_letters(s) for s in SERVICES),
    )


def of_service(service: str) -> tuple[str, ...]:
    """The topics a service reads or writes: those it checks (or creates) at start."""
    own = rights()[service]
    return tuple(dict.fromkeys((*own.writes, *own.reads)))
