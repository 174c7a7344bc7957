"""The customer rules: when may a customer cancel or modify a booking online, and why not.

Every booking keeps the self-service terms in force when it was placed (`Terms`, frozen on it).
What applies later is decided by `applicable_rule`, and this is the promise to customers:

* **A booking keeps its terms; a later settings change may make them more generous, never
  stricter.** The cut-off is the more lenient of the frozen one and today's (the later
  deadline wins); a status blocks only if it blocked both then and now.
* **Except the switches: turning online cancelling (or modifying) off applies at once**, to
  every booking. A business must be able to stop self-service immediately (a sold-out event,
  a dispute, a system change); turning it on applies at once too.
* **A booking placed while the action was off has no terms for it**: today's rules apply as
  they stand (otherwise enabling self-service later would leave older bookings with none).

Cut-offs count in the tenant's time zone: hours back from the start; days as calendar days
(with 2 days, a booking starting on the 25th may be changed until the end of the 23rd, local
time). Nothing is ever allowed once the booking has started, or once it is cancelled or void.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.bookings.errors import NotEligible
from services.bookings.statuses import CLOSED, STOP

Action = Literal["cancel", "modify"]


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")  # accounts validates time zones; never fail a customer on one


@dataclass(frozen=True)
class Cutoff:
    amount: int
    unit: str  # "days" | "hours"

    def deadline(self, starts_at: datetime, timezone: str) -> datetime:
        """The instant from which a customer may no longer act on a booking that starts at
        `starts_at` (they may act before it)."""
        if self.unit == "hours":
            return starts_at - timedelta(hours=self.amount)
        local = zone(timezone)
        last_day = starts_at.astimezone(local).date() - timedelta(days=self.amount)
        end_of_day = datetime.combine(last_day + timedelta(days=1), time(0), local)
        return min(end_of_day, starts_at)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> Cutoff:
        raw = raw or {"amount": 0, "unit": "days"}
        return cls(int(raw["amount"]), str(raw["unit"]))

    def as_dict(self) -> dict[str, Any]:
        return {"amount": self.amount, "unit": self.unit}

    def __str__(self) -> str:
        unit = self.unit if self.amount != 1 else self.unit.rstrip("s")
        return f"{self.amount} {unit}"


@dataclass(frozen=True)
class Terms:
    """The self-service settings of a tenant, as frozen on a booking (or as they stand now)."""

    settings_version: int = 0
    allow_cancel: bool = False
    cancel_cutoff: Cutoff = field(default_factory=lambda: Cutoff(0, "days"))
    allow_modify: bool = False
    modify_cutoff: Cutoff = field(default_factory=lambda: Cutoff(0, "days"))
    blocking_statuses: frozenset[str] = frozenset()
    timezone: str = "UTC"

    def allows(self, action: Action) -> bool:
        return self.allow_cancel if action == "cancel" else self.allow_modify

    def cutoff(self, action: Action) -> Cutoff:
        return self.cancel_cutoff if action == "cancel" else self.modify_cutoff

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> Terms:
        raw = raw or {}
        return cls(
            settings_version=int(raw.get("settings_version", 0)),
            allow_cancel=bool(raw.get("allow_cancel", False)),
            cancel_cutoff=Cutoff.from_dict(raw.get("cancel_cutoff")),
            allow_modify=bool(raw.get("allow_modify", False)),
            modify_cutoff=Cutoff.from_dict(raw.get("modify_cutoff")),
            blocking_statuses=frozenset(raw.get("blocking_statuses", ())),
            timezone=str(raw.get("timezone") or "UTC"),
        )

    def as_dict(self) -> dict[str, Any]:
        """The stored (and published: `BookingTerms`) form."""
        return {
            "settings_version": self.settings_version,
            "allow_cancel": self.allow_cancel,
            "cancel_cutoff": self.cancel_cutoff.as_dict(),
            "allow_modify": self.allow_modify,
            "modify_cutoff": self.modify_cutoff.as_dict(),
            "blocking_statuses": sorted(self.blocking_statuses),
            "timezone": self.timezone,
        }


@dataclass(frozen=True)
class Rule:
    """What applies to one action on one booking now (see the module docstring)."""

    action: Action
    allowed: bool
    blocking_statuses: frozenset[str]
    cutoffs: tuple[tuple[Cutoff, str], ...]  # (cut-off, time zone): the latest deadline wins
    frozen: bool  # whether the booking's own terms shaped it

    def deadline(self, starts_at: datetime) -> datetime:
        return _latest_deadline(self.cutoffs, starts_at)

    def refusal(self, status: str, starts_at: datetime, now: datetime) -> NotEligible | None:
        """Why a customer may not act now; None if they may. The first reason that applies,
        in the order a customer would ask about it."""
        verb, done = ("cancel", "cancelled") if self.action == "cancel" else ("change", "changed")
        if status in CLOSED:
            word = "cancelled" if status == STOP else "void"
            return NotEligible("already_closed", f"This booking is already {word}.")
        if not self.allowed:
            return NotEligible("setting_off", f"This business does not let customers {verb} bookings online.")
        if status in self.blocking_statuses:
            return NotEligible(
                "status_blocks",
                f"Bookings in this status cannot be {done} online; please contact the business.",
            )
        if now >= starts_at:
            return NotEligible("already_started", "This booking has already started.")
        if now >= self.deadline(starts_at):
            return NotEligible(
                "cutoff_passed", f"It is too late to {verb} this booking online; please contact the business."
            )
        return None

    def describe(self) -> dict[str, Any]:
        """The rule as a customer is shown it."""
        return {
            "allowed": self.allowed,
            "cutoff": [{**cutoff.as_dict(), "timezone": timezone} for cutoff, timezone in self.cutoffs],
            "blocking_statuses": sorted(self.blocking_statuses),
            "from_booking_terms": self.frozen,
        }


@functools.lru_cache(maxsize=16_384)
def _latest_deadline(cutoffs: tuple[tuple[Cutoff, str], ...], starts_at: datetime) -> datetime:
    # Remembered: every listing asks it of every booking, twice per action, and the answer
    # depends on nothing else (an instant, in UTC, whatever offset `starts_at` came with).
    return max(cutoff.deadline(starts_at, timezone) for cutoff, timezone in cutoffs).astimezone(UTC)


def applicable_rule(action: Action, frozen: Terms, current: Terms) -> Rule:
    now_rule = (current.cutoff(action), current.timezone)
    if not frozen.allows(action):
        return Rule(action, current.allows(action), current.blocking_statuses, (now_rule,), frozen=False)
    return Rule(
        action,
        current.allows(action),
        frozen.blocking_statuses & current.blocking_statuses,
        ((frozen.cutoff(action), frozen.timezone), now_rule),
        frozen=True,
    )


def refusal(
    action: Action, status: str, starts_at: datetime, frozen: Terms, current: Terms, now: datetime
) -> NotEligible | None:
    return applicable_rule(action, frozen, current).refusal(status, starts_at, now)
