"""What belongs to a tenant (a business) rather than to one customer: its customer-account
settings, and the staff members who may act for it.
"""

from __future__ import annotations

import hmac
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from backbone.domain import Aggregate, DomainError, event

_SETTINGS_IDS = uuid5(NAMESPACE_URL, "urn:booking-accounts:accounts:tenant-settings")

DEFAULT_SETTINGS: dict[str, Any] = {
    "customer_logins_enabled": False,  # off until the business turns accounts on
    "require_login_to_book": False,
    "show_pre_bookings": False,
    "allow_cancel": False,
    "cancel_cutoff": {"amount": 0, "unit": "days"},
    "allow_modify": False,
    "modify_cutoff": {"amount": 0, "unit": "days"},
    "blocking_statuses": [],
    "timezone": "UTC",
}


class TenantSettings(Aggregate):
    """The customer-account settings of one tenant. Every change is an event (who changed
    what, when: the event's meta), and the current settings are the sum of them."""

    @staticmethod
    def create_id(tenant_id: str) -> UUID:
        return uuid5(_SETTINGS_IDS, tenant_id)

    @event("Initialised")
    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.values: dict[str, Any] = dict(DEFAULT_SETTINGS)

    def change(self, changes: dict[str, Any]) -> None:
        unknown = set(changes) - set(DEFAULT_SETTINGS)
        if unknown:
            raise DomainError(f"unknown settings: {sorted(unknown)}", code="unknown_setting")
        effective = {k: v for k, v in changes.items() if self.values.get(k) != v}
        if effective:
            self.record_change(changes=effective)

    @event("Changed")
    def record_change(self, changes: dict[str, Any]) -> None:
        self.values = {**self.values, **changes}


class StaffMember(Aggregate):
    """Someone (or some system: a front desk, a website's backend) who acts for one tenant
    through the staff API, with an API key of which only the hash is kept. Every staff action
    is recorded with `staff:<id>` as its actor."""

    id: UUID  # random; part of the API key, which names its staff member

    @event("Added")
    def __init__(self, tenant_id: str, label: str, key_hash: str) -> None:
        self.tenant_id = tenant_id
        self.label = label
        self.key_hash = key_hash
        self.active = True

    def admits(self, key_hash: str) -> bool:
        return self.active and hmac.compare_digest(self.key_hash, key_hash)

    def remove(self) -> None:
        if self.active:
            self.record_removed()

    @event("Removed")
    def record_removed(self) -> None:
        self.active = False
        self.key_hash = ""
