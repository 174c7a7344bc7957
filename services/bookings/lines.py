"""A booking's lines: what they cost, how a customer's request revises them, and how a change
is told in words (for the `BookingModified` event and the booking's history).

A line is a dict of the contract's `BookingLine` fields (kind, ref, name, starts_at, ends_at,
quantity, unit_price). Customers cannot set prices: the bookings service has no catalogue, so
a customer may move, resize, remove or repeat the lines they have, at the prices they have; a
new product or a new price comes from the service that owns the catalogue (`ModifyBooking`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from services.bookings.errors import Refused
from services.bookings.terms import zone

Line = dict[str, Any]


def total(lines: Sequence[Line]) -> Decimal:
    return sum((Decimal(line["unit_price"]) * int(line["quantity"]) for line in lines), start=Decimal("0"))


@dataclass(frozen=True)
class LineChange:
    """A customer's change to line `index`: new dates and/or quantity."""

    index: int
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    quantity: int | None = None


@dataclass(frozen=True)
class ExtraLine:
    """One more of line `like`, at other dates and/or another quantity."""

    like: int
    starts_at: datetime
    ends_at: datetime
    quantity: int


def revise(
    lines: Sequence[Line],
    changes: Sequence[LineChange] = (),
    extra: Sequence[ExtraLine] = (),
    remove: Sequence[int] = (),
    *,
    now: datetime,
) -> list[Line]:
    """The lines after a customer's request, checked: every index exists, every changed or
    added line starts in the future and ends after it starts, and one line at least is left."""
    revised = [dict(line) for line in lines]

    def existing(index: int) -> Line:
        if not 0 <= index < len(lines):
            raise Refused("invalid_change", f"The booking has no line {index}.")
        return revised[index]

    def check(line: Line) -> Line:
        if line["ends_at"] <= line["starts_at"]:
            raise Refused("invalid_change", f"{line['name']}: the end must be after the start.")
        if line["starts_at"] <= now:
            raise Refused("invalid_change", f"{line['name']}: the new start is in the past.")
        if not 1 <= line["quantity"] <= 10_000:
            raise Refused("invalid_change", f"{line['name']}: the quantity must be 1 to 10000.")
        return line

    for change in changes:
        line = existing(change.index)
        starts = change.starts_at or line["starts_at"]
        if change.starts_at is not None and change.ends_at is None:  # keep the duration
            ends = starts + (line["ends_at"] - line["starts_at"])
        else:
            ends = change.ends_at or line["ends_at"]
        quantity = change.quantity if change.quantity is not None else line["quantity"]
        revised[change.index] = check({**line, "starts_at": starts, "ends_at": ends, "quantity": quantity})
    for new in extra:
        model = existing(new.like)
        revised.append(
            check({**model, "starts_at": new.starts_at, "ends_at": new.ends_at, "quantity": new.quantity})
        )
    for index in remove:
        existing(index)
    kept = [line for i, line in enumerate(revised) if i not in set(remove)]
    if not kept:
        raise Refused("invalid_change", "A booking needs one line at least; cancel it instead.")
    return kept


def describe(before: Sequence[Line], after: Sequence[Line], timezone: str) -> list[str]:
    """What changed between two lists of lines, one sentence each (no personal data)."""

    def when(line: Line) -> str:
        return line["starts_at"].astimezone(zone(timezone)).strftime("%Y-%m-%d %H:%M")

    sentences = []
    for i in range(max(len(before), len(after))):
        if i >= len(after):
            sentences.append(f"Removed {before[i]['name']} on {when(before[i])}.")
            continue
        new = after[i]
        if i >= len(before):
            sentences.append(f"Added {new['name']} x{new['quantity']} on {when(new)}.")
            continue
        old = before[i]
        if (old["kind"], old["ref"]) != (new["kind"], new["ref"]):
            sentences.append(f"Replaced {old['name']} with {new['name']} x{new['quantity']} on {when(new)}.")
            continue
        if (old["starts_at"], old["ends_at"]) != (new["starts_at"], new["ends_at"]):
            sentences.append(f"{new['name']} moved from {when(old)} to {when(new)} ({timezone}).")
        if old["quantity"] != new["quantity"]:
            sentences.append(f"{new['name']}: quantity {old['quantity']} to {new['quantity']}.")
        if Decimal(old["unit_price"]) != Decimal(new["unit_price"]):
            sentences.append(f"{new['name']}: unit price {old['unit_price']:.2f} to {new['unit_price']:.2f}.")
        if old["name"] != new["name"]:
            sentences.append(f"{old['name']} renamed {new['name']}.")
    return sentences
