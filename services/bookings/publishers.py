"""Who may send which command: the command publishers registered with the bookings service.

A consumer cannot see the Kafka principal that produced a record, so a Kafka ACL alone cannot
bind a command to a tenant. Each publisher (a storefront, a payment service, a back office)
therefore signs every command with its own Ed25519 key (`backbone.signing`: the signature and
its key id travel in headers), and the platform operator registers the public half here,
through the bookings admin API (`POST /v1/admin/publishers`, ADMIN_API_TOKEN), bound to:

* a name: the command's `issued_by` must be it;
* tenants: the businesses it may act on (`*`: every tenant, for a platform's own back office);
* capabilities: what it may do (`CAPABILITIES`).

The private key never leaves the publisher. A registration is a `Publisher` aggregate in the
bookings event store (who registered it, when, and its revocation are audited like any event).
Rotation: register the new key, switch the publisher to it, revoke the old one.

The inbox checks the signature (`backbone.signing.Verifier`, with `lookup` here) before it
reads the command, then `authorize` before it applies it. A refusal is a final rejection on
`bookings.command-outcomes` (`REFUSAL_CODES`) and a dead letter.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable
from typing import Annotated, Any, Literal
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import AggregateNotFoundError
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from backbone.domain import Aggregate, event
from backbone.signing import TrustedKey, key_id
from backbone.unitofwork import UnitOfWork
from contracts import bookings as contract
from contracts.envelope import Command

Capability = Literal["place", "pay", "cancel", "modify", "statuses", "override", "act_for_customer"]
CAPABILITIES: dict[str, str] = {
    "place": "PlaceBooking",
    "pay": "RecordPayment",
    "cancel": "CancelBooking, VoidBooking",
    "modify": "ModifyBooking, ChangeBookingStatus",
    "statuses": "DefineCustomStatus, RetireCustomStatus",
    "override": "override_customer_rules: true (staff acting beyond the customer rules)",
    "act_for_customer": "on_behalf_of a customer (held to the customer rules)",
}
NEEDED: dict[type[Command], str] = {
    contract.PlaceBooking: "place",
    contract.PlaceBookingV2: "place",
    contract.RecordPayment: "pay",
    contract.CancelBooking: "cancel",
    contract.VoidBooking: "cancel",
    contract.ModifyBooking: "modify",
    contract.ChangeBookingStatus: "modify",
    contract.DefineCustomStatus: "statuses",
    contract.RetireCustomStatus: "statuses",
}

# Final reasons a command is refused before it is applied (the signature ones come first).
REFUSAL_CODES: dict[str, str] = {
    "unsigned": "The command carries no signature (headers signature, signature-key-id).",
    "unknown_signing_key": "No registered, unrevoked publisher key has this key id.",
    "bad_signature": "The signature does not verify over the body and the signed headers.",
    "not_from_owner": "Signed by a key that may not publish commands (a service's own key).",
    "issuer_mismatch": "issued_by is not the name the publisher's key is registered under.",
    "tenant_not_allowed": "The publisher's key is not registered for this tenant.",
    "capability_missing": "The publisher's key lacks the capability this command needs.",
}

_IDS = uuid5(NAMESPACE_URL, "urn:booking-accounts:command-publishers")
ALL_TENANTS = "*"


class Publisher(Aggregate):
    """One registered publisher key and what it may do."""

    @staticmethod
    @functools.lru_cache(maxsize=1024)  # asked for once per command, for a handful of keys
    def create_id(key_id: str) -> UUID:
        return uuid5(_IDS, key_id)

    @event("Registered")
    def __init__(self, key_id: str, name: str, public_key: str, tenants: list[str], capabilities: list[str]):
        self.key_id = key_id
        self.name = name
        self.public_key = public_key  # base64 of the 32-byte Ed25519 public key
        self.tenants = tenants
        self.capabilities = capabilities
        self.revoked = False

    def revoke(self) -> None:
        if not self.revoked:
            self.record_revocation()

    @event("Revoked")
    def record_revocation(self) -> None:
        self.revoked = True

    def trusted_key(self) -> TrustedKey:
        return TrustedKey(f"publisher:{self.name}", self.key_id, base64.b64decode(self.public_key))

    def refusal(self, command: Command) -> tuple[str, str] | None:
        """(code, message) if this publisher may not send this command; None if it may."""
        if command.issued_by != self.name:
            return "issuer_mismatch", f"this key is registered to {self.name!r}, not {command.issued_by!r}"
        if ALL_TENANTS not in self.tenants and command.tenant_id not in self.tenants:
            return "tenant_not_allowed", f"{self.name} may not act on tenant {command.tenant_id!r}"
        needed = {NEEDED.get(type(command), "override")}  # an unlisted command: the most
        if getattr(command, "override_customer_rules", False):
            needed.add("override")
        actor = getattr(command, "on_behalf_of", None)
        if actor is not None and actor.kind == "customer":
            needed.add("act_for_customer")
        missing = sorted(needed - set(self.capabilities))
        if missing:
            return "capability_missing", f"{self.name} lacks the capabilities {', '.join(missing)}"
        return None


def lookup(app: Any, cache_size: int = 1000) -> Callable[[str], TrustedKey | None]:
    """The verifier's `lookup`: a registered, unrevoked publisher key by id (blocking).

    Found keys are kept in memory (a key id always names the same key: it is derived from it),
    so a batch of commands costs no store read per command here; a revocation still counts at
    once, because `authorize` reads the publisher (once per batch) before applying anything."""
    found: dict[str, TrustedKey] = {}

    def find(kid: str) -> TrustedKey | None:
        if kid in found:
            return found[kid]
        publisher = _get(app, kid)
        if publisher is None or publisher.revoked:
            return None
        if len(found) >= cache_size:
            found.clear()
        found[kid] = publisher.trusted_key()
        return found[kid]

    return find


def authorize(record: Any, command: Command, uow: UnitOfWork) -> tuple[str, str] | None:
    """The inbox's check of a command whose signature verified: may its publisher send it?
    Unsigned commands get here only when ACCEPT_UNSIGNED_COMMANDS is on (local development)."""
    kid = next((v.decode() for k, v in record.headers or () if k == "signature-key-id"), None)
    if kid is None:
        return None
    publisher = uow.get(Publisher, Publisher.create_id(kid))
    if publisher is None or publisher.revoked:
        return "unknown_signing_key", f"no registered publisher key {kid}"
    return publisher.refusal(command)


def _get(app: Any, kid: str) -> Publisher | None:
    try:
        found = app.repository.get(Publisher.create_id(kid))
    except AggregateNotFoundError:
        return None
    return found if isinstance(found, Publisher) else None


# -------------------------------------------------------------------- the admin API's side


class PublisherRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(min_length=1, max_length=100)] = Field(
        description="The publisher's name: its commands' `issued_by`."
    )
    public_key: str = Field(description="base64 of the publisher's 32-byte Ed25519 public key.")
    tenants: list[Annotated[str, StringConstraints(pattern=r"^(\*|[a-z0-9][a-z0-9-]{0,62})$")]] = Field(
        min_length=1, description="The tenants it may act on; `*` for every tenant."
    )
    capabilities: list[Capability] = Field(min_length=1)

    @field_validator("public_key")
    @classmethod
    def _key(cls, value: str) -> str:
        try:
            raw = base64.b64decode(value, validate=True)
        except ValueError:
            raise ValueError("not base64") from None
        if len(raw) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes")
        return value


class PublisherView(BaseModel):
    key_id: str
    name: str
    tenants: list[str]
    capabilities: list[str]
    revoked: bool


def register(app: Any, request: PublisherRequest) -> PublisherView:
    """Register a publisher key (idempotent for the same key and grants)."""
    kid = key_id(base64.b64decode(request.public_key))
    existing = _get(app, kid)
    if existing is None:
        existing = Publisher(
            key_id=kid,
            name=request.name,
            public_key=request.public_key,
            tenants=sorted(set(request.tenants)),
            capabilities=sorted(set(request.capabilities)),
        )
        app.save(existing)
    return view(existing)


def revoke(app: Any, kid: str) -> PublisherView | None:
    publisher = _get(app, kid)
    if publisher is None:
        return None
    publisher.revoke()
    app.save(publisher)
    return view(publisher)


def view(publisher: Publisher) -> PublisherView:
    return PublisherView(
        key_id=publisher.key_id,
        name=publisher.name,
        tenants=publisher.tenants,
        capabilities=publisher.capabilities,
        revoked=publisher.revoked,
    )
