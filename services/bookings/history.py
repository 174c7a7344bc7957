"""A booking's history as its customer sees it: what happened, when, who did it, and under
which policy, told from the booking's own events (so it can never disagree with them).

Who did it is said as a customer would understand it: "you", "the business" (staff) or "the
business's systems" (a service); staff ids and internal notes are not shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any
from uuid import UUID

from backbone.context import Cause
from backbone.personal import Personal
from services.bookings.domainmodel import Booking
from services.bookings.statuses import CustomStatus, label
from services.bookings.terms import Terms

BY = {"customer": "the customer", "staff": "the business", "service": "the business's systems"}


def customer_history(
    events: Iterable[Any], account_id: UUID, custom: Mapping[str, CustomStatus]
) -> list[dict[str, Any]]:
    entries = []
    currency = ""
    for event in events:
        actor = Cause.from_meta(getattr(event, "meta", None)).actor
        kind = actor.partition(":")[0]
        by = {"kind": kind, "you": actor == f"customer:{account_id}", "label": BY.get(kind, kind)}
        if by["you"]:
            by["label"] = "you"
        entry: dict[str, Any] = {"at": event.timestamp, "version": event.originator_version, "by": by}
        if isinstance(event, Booking.Placed):
            currency = event.currency
            entry.update(
                what="placed",
                summary=f"Booking {event.code} placed: {len(event.lines)} line(s), "
                f"total {_money(event.total)} {currency}.",
                policy=_terms(event.terms),
            )
        elif isinstance(event, Booking.PaymentRecorded):
            entry.update(
                what="payment_recorded", summary=f"Payment of {_money(event.amount)} {currency} recorded."
            )
        elif isinstance(event, Booking.StatusChanged):
            why = {"payment": " after a payment", "modification": " as the total changed"}.get(
                event.cause, ""
            )
            entry.update(
                what="status_changed",
                summary=f"Status changed from {label(event.status_before, custom)} to "
                f"{label(event.status, custom)}{why}.",
            )
        elif isinstance(event, Booking.Modified):
            entry.update(what="modified", summary=" ".join(event.changes), policy=_rule(event))
        elif isinstance(event, Booking.Cancelled):
            summary = (
                f"Cancelled; refund due {_money(event.refund_due)} {currency} (refunds are not automatic)."
            )
            if event.rules_overridden:
                summary += " The business cancelled it outside the online rules."
            reason = event.reason.value if isinstance(event.reason, Personal) else event.reason
            if by["you"] and reason:
                summary += f" Your reason: {reason}"
            entry.update(what="cancelled", summary=summary, policy=_rule(event))
        elif isinstance(event, Booking.Voided):
            entry.update(what="voided", summary="Voided (made in error).")
        elif isinstance(event, Booking.CustomerErased):
            entry.update(what="customer_erased", summary="Customer details erased.")
        else:
            continue
        entries.append(entry)
    return entries


def _terms(raw: dict[str, Any]) -> dict[str, Any]:
    terms = Terms.from_dict(raw)
    return {
        "settings_version": terms.settings_version,
        "cancel": {"allowed": terms.allow_cancel, "cutoff": str(terms.cancel_cutoff)},
        "modify": {"allowed": terms.allow_modify, "cutoff": str(terms.modify_cutoff)},
        "blocking_statuses": sorted(terms.blocking_statuses),
        "timezone": terms.timezone,
    }


def _rule(event: Any) -> dict[str, Any] | None:
    rule = getattr(event, "rule", None)
    if rule is None:
        return None
    return {**rule, "rules_overridden": bool(getattr(event, "rules_overridden", False))}


def _money(amount: Decimal) -> str:
    return f"{Decimal(amount):.2f}"
