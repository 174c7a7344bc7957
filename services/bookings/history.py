"""A booking's history as its customer sees it: what happened, when, who did it, and under
which policy, told from the booking's own events (so it can never disagree with them).

Two steps, so that reading it never touches the event store: `recorded` keeps what an event
says (the projection stores it in `views.booking_history`, one row per event), and
`customer_history` tells those rows to one customer. What depends on who reads (whether it was
"you"), or on what may change later (the labels of custom statuses), is decided when read.

Who did it is said as a customer would understand it: "you", "the business" (staff) or "the
business's systems" (a service); staff ids and internal notes are not shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any
from uuid import UUID

from services.bookings.domainmodel import Booking
from services.bookings.statuses import CustomStatus, label
from services.bookings.terms import Terms

BY = {"customer": "the customer", "staff": "the business", "service": "the business's systems"}


def recorded(event: Any) -> dict[str, Any] | None:
    """What a booking event adds to its history (`what` and the facts it is told from), or
    None for an event the history does not show."""
    if isinstance(event, Booking.Placed):
        return {
            "what": "placed",
            "code": event.code,
            "lines": len(event.lines),
            "total": event.total,
            "currency": event.currency,
            "policy": _terms(event.terms),
        }
    if isinstance(event, Booking.PaymentRecorded):
        return {"what": "payment_recorded", "amount": event.amount}
    if isinstance(event, Booking.StatusChanged):
        return {
            "what": "status_changed",
            "status_before": event.status_before,
            "status": event.status,
            "cause": event.cause,
        }
    if isinstance(event, Booking.Modified):
        return {"what": "modified", "summary": " ".join(event.changes), "policy": _rule(event)}
    if isinstance(event, Booking.Cancelled):
        return {
            "what": "cancelled",
            "refund_due": event.refund_due,
            "rules_overridden": bool(event.rules_overridden),
            "reason": event.reason,
            "policy": _rule(event),
        }
    if isinstance(event, Booking.Voided):
        return {"what": "voided"}
    if isinstance(event, Booking.CustomerErased):
        return {"what": "customer_erased"}
    return None


def rows_of(events: Iterable[Any]) -> list[dict[str, Any]]:
    """History rows as `views.booking_history` keeps them, made from a booking's events in
    memory (staff pages, which read the aggregate anyway). A sealed reason is given in the
    clear here: these rows are never stored."""
    from backbone.context import Cause
    from backbone.personal import Personal
    from backbone.sqltypes import jsonable

    rows = []
    for event in events:
        facts = recorded(event)
        if facts is None:
            continue
        if isinstance(facts.get("reason"), Personal):
            facts["reason"] = facts["reason"].value
        rows.append(
            {
                "at": event.timestamp,
                "version": event.originator_version,
                "actor": Cause.from_meta(getattr(event, "meta", None)).actor,
                "what": facts.pop("what"),
                "facts": jsonable(facts),
            }
        )
    return rows


def customer_history(
    rows: Iterable[Mapping[str, Any]], account_id: UUID, custom: Mapping[str, CustomStatus]
) -> list[dict[str, Any]]:
    """The history told to the customer `account_id`, from the rows of `views.booking_history`
    (at, version, actor, what, facts), oldest first."""
    entries = []
    currency = ""
    for row in rows:
        actor = row["actor"]
        kind = actor.partition(":")[0]
        by = {"kind": kind, "you": actor == f"customer:{account_id}", "label": BY.get(kind, kind)}
        if by["you"]:
            by["label"] = "you"
        entry: dict[str, Any] = {"at": row["at"], "version": row["version"], "by": by}
        what, facts = row["what"], row["facts"]
        if what == "placed":
            currency = facts["currency"]
            entry.update(
                what="placed",
                summary=f"Booking {facts['code']} placed: {facts['lines']} line(s), "
                f"total {_money(facts['total'])} {currency}.",
                policy=facts["policy"],
            )
        elif what == "payment_recorded":
            entry.update(
                what="payment_recorded", summary=f"Payment of {_money(facts['amount'])} {currency} recorded."
            )
        elif what == "status_changed":
            why = {"payment": " after a payment", "modification": " as the total changed"}.get(
                facts["cause"], ""
            )
            entry.update(
                what="status_changed",
                summary=f"Status changed from {label(facts['status_before'], custom)} to "
                f"{label(facts['status'], custom)}{why}.",
            )
        elif what == "modified":
            entry.update(what="modified", summary=facts["summary"], policy=facts["policy"])
        elif what == "cancelled":
            summary = (
                f"Cancelled; refund due {_money(facts['refund_due'])} {currency} (refunds are not automatic)."
            )
            if facts["rules_overridden"]:
                summary += " The business cancelled it outside the online rules."
            if by["you"] and facts["reason"]:
                summary += f" Your reason: {facts['reason']}"
            entry.update(what="cancelled", summary=summary, policy=facts["policy"])
        elif what == "voided":
            entry.update(what="voided", summary="Voided (made in error).")
        elif what == "customer_erased":
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


def _money(amount: Decimal | str) -> str:
    return f"{Decimal(amount):.2f}"
