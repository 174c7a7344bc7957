"""Test support for the bookings service: command bodies as other services publish them, and
the accounts service's events as its relay publishes them (personal data sealed with a vault
playing the accounts service, `source`/`source-position` headers), plus customer session tokens
signed with the accounts signing key the test `System` created.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from backbone.bus import H_SOURCE, H_SOURCE_POSITION
from backbone.credentials import SessionSigner, load_or_create_signing_key, seal
from backbone.personal import Vault

Record = tuple[bytes, bytes, dict[str, str]]


def command(command_type: str, tenant: str, booking_id: Any = None, version: int = 1, **fields: Any) -> dict:
    body = {
        "command_type": command_type,
        "schema_version": version,
        "command_id": str(uuid.uuid4()),
        "issued_at": datetime.now(UTC).isoformat(),
        "issued_by": "backoffice",
        "tenant_id": tenant,
        "correlation_id": str(uuid.uuid4()),
        **fields,
    }
    if booking_id is not None:
        body["booking_id"] = str(booking_id)
    return body


def line(name: str, starts_at: datetime, price: str, quantity: int = 1, hours: int = 2, kind: str = "item"):
    return {
        "kind": kind,
        "ref": name.lower().replace(" ", "-"),
        "name": name,
        "starts_at": starts_at.isoformat(),
        "ends_at": (starts_at + timedelta(hours=hours)).isoformat(),
        "quantity": quantity,
        "unit_price": price,
    }


def place(
    tenant: str,
    email: str,
    *,
    booking_id: Any = None,
    starts_at: datetime | None = None,
    status: str = "PEND",
    paid: str = "0.00",
    account_id: Any = None,
    form: dict[str, str] | None = None,
) -> dict:
    """A PlaceBooking v2: a kayak (item, 80.00) and two lunches (product, 12.50 each) = 105.00."""
    start = starts_at or datetime.now(UTC) + timedelta(days=7)
    booking_id = booking_id or uuid.uuid4()
    return command(
        "PlaceBooking",
        tenant,
        booking_id,
        version=2,
        booking_code=f"B-{uuid.UUID(str(booking_id)).hex[:8].upper()}",
        customer={"email": email, "name": "Test Customer", "phone": "+43 1 234567"},
        account_id=str(account_id) if account_id else None,
        lines=[
            line("Kayak for two", start, "80.00", hours=3),
            line("Picnic lunch", start, "12.50", 2, 1, "product"),
        ],
        currency="EUR",
        status=status,
        amount_paid=paid,
        form=form or {"pickup": "Harbour gate"},
    )


def pay(tenant: str, booking_id: Any, amount: str, payment_id: str | None = None, **fields: Any) -> dict:
    return command(
        "RecordPayment",
        tenant,
        booking_id,
        payment_id=payment_id or f"pay-{uuid.uuid4().hex[:10]}",
        amount=amount,
        currency="EUR",
        method="card",
        **fields,
    )


def record(body: dict) -> Record:
    """A command as a Kafka record: keyed by its booking (or by its tenant)."""
    from tests.support.system import signed_command

    key = body.get("booking_id") or body["tenant_id"]
    return signed_command(key.encode(), json.dumps(body).encode())


@dataclass
class AccountsFeed:
    """Plays the accounts service on the bus: its events and its subject keys."""

    tenant: str
    vault: Vault = field(default_factory=lambda: Vault("sqlite+pysqlite:///:memory:", "accounts"))
    position: int = 0
    settings_version: int = 0
    notifier_public_key: bytes | None = None  # to seal links the notifier (if running) can open

    def _link(self) -> str:
        if self.notifier_public_key is None:
            return "A" * 40
        return seal(
            self.notifier_public_key, f"https://accounts.example/verify-email?token={uuid.uuid4().hex}"
        )

    def _event(
        self, event_type: str, version: int, key: str, tenant: str | None = None, **fields: Any
    ) -> Record:
        self.position += 1  # one upstream log: positions only grow
        body = {
            "event_type": event_type,
            "schema_version": version,
            "event_id": str(uuid.uuid4()),
            "occurred_at": datetime.now(UTC).isoformat(),
            "tenant_id": tenant or self.tenant,
            "correlation_id": str(uuid.uuid4()),
            **fields,
        }
        headers = {H_SOURCE: "accounts", H_SOURCE_POSITION: str(self.position)}
        return (key.encode(), json.dumps(body, default=str).encode(), headers)

    def _sealed(self, account_id: uuid.UUID, text: str) -> dict:
        return self.vault.seal(account_id, text).model_dump(mode="json")

    def settings(self, tenant: str | None = None, **settings: Any) -> Record:
        self.settings_version += 1
        fields = {
            "customer_logins_enabled": True,
            "require_login_to_book": False,
            "show_pre_bookings": False,
            "allow_cancel": False,
            "cancel_cutoff": {"amount": 0, "unit": "days"},
            "allow_modify": False,
            "modify_cutoff": {"amount": 0, "unit": "days"},
            "blocking_statuses": [],
            "timezone": "UTC",
            **settings,
        }
        return self._event(
            "TenantSettingsChanged",
            1,
            tenant or self.tenant,
            tenant=tenant,
            settings_version=self.settings_version,
            changed_by={"kind": "staff", "id": "s1"},
            **fields,
        )

    def staff_member_added(self, staff_id: uuid.UUID, key_hash: str, tenant: str | None = None) -> Record:
        """A staff member of the tenant got an API key (`backbone.credentials.staff_api_key`)."""
        return self._event("StaffMemberAdded", 1, str(staff_id), tenant, staff_id=str(staff_id), key_hash=key_hash)

    def claimed_and_verified(
        self, account_id: uuid.UUID, email: str, tenant: str | None = None
    ) -> list[Record]:
        key = str(account_id)
        return [
            self._event(
                "AccountClaimed",
                2,
                key,
                tenant,
                account_id=key,
                email=self._sealed(account_id, email),
                name=self._sealed(account_id, "Customer"),
                claimed_by="customer",
                link=self._link(),
                link_expires_at=datetime.now(UTC).isoformat(),
            ),
            self._event(
                "EmailVerified",
                2,
                key,
                tenant,
                account_id=key,
                email=self._sealed(account_id, email),
                name=self._sealed(account_id, "Customer"),
                first_time=True,
            ),
        ]

    def sessions_revoked(
        self, account_id: uuid.UUID, before: datetime, reason: str = "logout", tenant: str | None = None
    ) -> Record:
        key = str(account_id)
        return self._event(
            "SessionsRevoked",
            1,
            key,
            tenant,
            account_id=key,
            revoked_before=before.isoformat(),
            reason=reason,
        )

    def archived(self, account_id: uuid.UUID, tenant: str | None = None) -> Record:
        key = str(account_id)
        return self._event(
            "AccountArchived", 1, key, tenant, account_id=key, archived_by={"kind": "staff", "id": "s1"}
        )

    def activated(self, account_id: uuid.UUID, tenant: str | None = None) -> Record:
        key = str(account_id)
        return self._event(
            "AccountActivated", 1, key, tenant, account_id=key, activated_by={"kind": "staff", "id": "s1"}
        )

    def redacted(self, account_id: uuid.UUID, tenant: str | None = None) -> Record:
        key = str(account_id)
        return self._event(
            "AccountRedacted", 1, key, tenant, account_id=key, redacted_by={"kind": "staff", "id": "s1"}
        )


def session_token(
    signing_key_file: Path, account_id: uuid.UUID, tenant: str, issued_at: datetime | None = None
):
    """A customer session as the accounts service issues it (same key, same claims)."""
    signer = SessionSigner(load_or_create_signing_key(signing_key_file))
    token, _ = signer.issue(account_id, tenant, issued_at)
    return {"Authorization": f"Bearer {token}"}


@dataclass
class BookingsBus:
    """Talks to a running bookings service over the real broker, as other services do."""

    kafka: str
    system: Any  # tests.support.system.System
    accounts: AccountsFeed

    def topic(self, name: str) -> str:
        return self.system.topic(name)

    def send(self, *bodies: dict) -> None:
        from tests.support.system import publish

        asyncio.run(publish(self.kafka, self.topic("bookings.commands"), [record(b) for b in bodies]))

    def hear(self, *records: Record) -> None:
        """Accounts events, its keys published first (as its relay does)."""
        from tests.support.system import publish, publish_subject_keys

        asyncio.run(publish_subject_keys(self.kafka, self.system, self.accounts.vault))
        signer = self.system.signer("accounts")  # as its relay: signed with its bus key
        signed = [(key, value, signer.sign(value, headers)) for key, value, headers in records]
        asyncio.run(publish(self.kafka, self.topic("accounts.events"), signed))

    def read(self, name: str) -> list[dict[str, Any]]:
        from tests.support.system import decode, read_topic

        return decode(asyncio.run(read_topic(self.kafka, self.topic(name))))

    def outcomes(self) -> dict[str, list[dict[str, Any]]]:
        answers: dict[str, list[dict[str, Any]]] = {}
        for outcome in self.read("bookings.command-outcomes"):
            answers.setdefault(outcome["command_id"], []).append(outcome)
        return answers

    def answered(self, *bodies: dict, times: int = 1, timeout: float = 60) -> list[dict[str, Any]]:
        """Wait until each command has `times` outcomes; the last outcome of each."""
        from tests.support.system import wait_for

        def done() -> Any:
            answers = self.outcomes()
            if all(len(answers.get(b["command_id"], ())) >= times for b in bodies):
                return [answers[b["command_id"]][-1] for b in bodies]
            return None

        return wait_for(done, timeout=timeout, what=f"{len(bodies)} command(s) answered {times}x")

    def events(self, *types: str, booking_id: Any = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.read("bookings.events")
            if (not types or e["event_type"] in types)
            and (booking_id is None or e.get("booking_id") == str(booking_id))
        ]
