"""What the bookings service knows of each tenant: its customer-account rules (from the
accounts service's `TenantSettingsChanged`) and its custom booking statuses (from commands)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from backbone.domain import Aggregate, event
from services.bookings.errors import Refused
from services.bookings.statuses import SYSTEM_STATUSES, CustomStatus
from services.bookings.terms import Terms

_POLICY_IDS = uuid5(NAMESPACE_URL, "urn:booking-accounts:bookings:tenant-policies")
_STATUS_IDS = uuid5(NAMESPACE_URL, "urn:booking-accounts:bookings:tenant-statuses")


@dataclass(frozen=True)
class Rules:
    """What a tenant's customer-account settings say (the policy's, or a read model's copy)."""

    settings_version: int
    settings: Mapping[str, Any]

    @property
    def customer_logins_enabled(self) -> bool:
        return bool(self.settings.get("customer_logins_enabled", False))

    @property
    def require_login_to_book(self) -> bool:
        return bool(self.settings.get("require_login_to_book", False))

    @property
    def show_pre_bookings(self) -> bool:
        return bool(self.settings.get("show_pre_bookings", False))

    @cached_property
    def terms(self) -> Terms:
        """The self-service rules as they stand (frozen on each new booking)."""
        return Terms.from_dict({**self.settings, "settings_version": self.settings_version})


_RULES: dict[tuple[int, int], Rules] = {}  # (id of the settings, their version) -> their rules
_RULES_KEPT = 1024  # a policy's settings are replaced, never changed in place: a few per tenant


class TenantPolicy(Aggregate):
    """The tenant's customer-account rules, as last published by the accounts service."""

    @staticmethod
    @lru_cache(maxsize=1024)  # asked for three times per command (a uuid5 each: 3 µs)
    def create_id(tenant_id: str) -> UUID:
        return uuid5(_POLICY_IDS, tenant_id)

    @event("Adopted")
    def __init__(self, tenant_id: str, settings_version: int, settings: dict[str, Any]) -> None:
        self.tenant_id = tenant_id
        self.settings_version = settings_version
        self.settings = settings

    def adopt(self, settings_version: int, settings: dict[str, Any]) -> None:
        if settings_version > self.settings_version:  # ignore stale or repeated versions
            self.record_adoption(settings_version=settings_version, settings=settings)

    @event("Updated")
    def record_adoption(self, settings_version: int, settings: dict[str, Any]) -> None:
        self.settings_version = settings_version
        self.settings = settings

    @classmethod
    def default(cls, tenant_id: str) -> TenantPolicy:
        """Rules of a tenant nothing was heard of: everything off (the product's default)."""
        return cls(tenant_id=tenant_id, settings_version=0, settings={})

    @property
    def rules(self) -> Rules:
        """The rules as the policy now stands: the same `Rules` (and its `terms`, parsed once) as
        long as the policy keeps the same settings (parsing the terms anew was a fifteenth of a
        PlaceBooking in the inbox). Kept beside the aggregate, not in it: an aggregate's attributes
        are its snapshots' state."""
        key = (id(self.settings), self.settings_version)
        rules = _RULES.get(key)
        if rules is None or rules.settings is not self.settings:  # (an id reused by a new dict)
            if len(_RULES) >= _RULES_KEPT:
                _RULES.clear()
            rules = _RULES[key] = Rules(self.settings_version, self.settings)
        return rules

    @property
    def customer_logins_enabled(self) -> bool:
        return self.rules.customer_logins_enabled

    @property
    def require_login_to_book(self) -> bool:
        return self.rules.require_login_to_book

    @property
    def show_pre_bookings(self) -> bool:
        return self.rules.show_pre_bookings

    def terms(self) -> Terms:
        """The self-service rules as they stand (frozen on each new booking)."""
        return self.rules.terms


class TenantStatuses(Aggregate):
    """A tenant's custom booking statuses (the system statuses are in `statuses.py`)."""

    @staticmethod
    @lru_cache(maxsize=1024)  # as `TenantPolicy.create_id`
    def create_id(tenant_id: str) -> UUID:
        return uuid5(_STATUS_IDS, tenant_id)

    @event("Started")
    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.defined: dict[str, dict[str, Any]] = {}

    @property
    def custom(self) -> dict[str, CustomStatus]:
        return {code: CustomStatus(code=code, **fields) for code, fields in self.defined.items()}

    def define(self, code: str, label: str, locks_inventory: bool) -> None:
        _not_a_system_status(code)
        wanted = {"label": label, "locks_inventory": locks_inventory, "active": True}
        if self.defined.get(code) != wanted:
            self._defined(code=code, label=label, locks_inventory=locks_inventory)

    @event("Defined")
    def _defined(self, code: str, label: str, locks_inventory: bool) -> None:
        self.defined[code] = {"label": label, "locks_inventory": locks_inventory, "active": True}

    def retire(self, code: str) -> None:
        _not_a_system_status(code)
        if code not in self.defined:
            raise Refused("status_not_found", f"{code} is not a custom status of this business.")
        if self.defined[code]["active"]:
            self._retired(code=code)

    @event("Retired")
    def _retired(self, code: str) -> None:
        self.defined[code] = {**self.defined[code], "active": False}


def _not_a_system_status(code: str) -> None:
    if code in SYSTEM_STATUSES:
        raise Refused("reserved_status", f"{code} is a system status; it cannot be changed.")
