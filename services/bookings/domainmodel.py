"""Bookings, and what the bookings service knows of customer accounts and of each tenant.

A `Booking` is placed by another service's command, with lines of classic *items* or new
*products*, and lives through payments, status changes, modifications and a cancellation or a
void (`statuses.py` has the transition table, `terms.py` the customer rules). No money ever
moves here: a cancellation states what was paid and what staff must refund by hand.

What the service knows of customer accounts (`customers.CustomerAccount`) and of each tenant
(`tenants.TenantPolicy`, `tenants.TenantStatuses`) lives beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from backbone.domain import Aggregate, event
from backbone.personal import Personal
from services.bookings import lines as booking_lines
from services.bookings import statuses
from services.bookings.errors import Refused
from services.bookings.statuses import (
    CLOSED,
    STOP,
    VOID,
    CustomStatus,
    check_transition,
    status_for_amounts,
)
from services.bookings.terms import Rule, Terms

Customer = dict[str, Personal | None]  # email, name, phone: about the booking's own data subject


class Booking(Aggregate):
    """A booking. Its id is also the id of its customer's details as a data subject: they are
    sealed with that subject's key, erased when the customer is (see backbone.personal)."""

    id: UUID  # chosen by the service that places the booking

    @event("Placed")
    def __init__(
        self,
        tenant_id: str,
        code: str,
        customer: Customer,
        account_id: UUID | None,
        lines: list[dict[str, Any]],
        currency: str,
        status: str,
        amount_paid: Decimal,
        total: Decimal,
        terms: dict[str, Any],
        form: dict[str, Personal] | None = None,
    ) -> None:
        self.tenant_id = tenant_id
        self.code = code
        self.customer = customer
        self.account_id = account_id
        self.lines = lines
        self.currency = currency
        self.status = status
        self.amount_paid = amount_paid
        self.total = total
        self.terms = terms  # the self-service rules in force when it was placed
        self.form = form or {}
        self.payments: dict[str, Decimal] = {}
        self.cancellation: dict[str, Any] | None = None
        self.customer_erased = False

    # ------------------------------------------------------------------ what it is

    @property
    def email(self) -> str | None:
        """The customer's email address; None once the customer was erased."""
        email = self.customer.get("email")
        return email.value if email is not None else None

    @property
    def starts_at(self) -> datetime:
        return min(line["starts_at"] for line in self.lines)

    @property
    def ends_at(self) -> datetime:
        return max(line["ends_at"] for line in self.lines)

    @property
    def balance_due(self) -> Decimal:
        return max(Decimal(0), self.total - self.amount_paid)

    @property
    def frozen_terms(self) -> Terms:
        return Terms.from_dict(self.terms)

    # ------------------------------------------------------------------ payments and status

    def record_payment(self, payment_id: str, amount: Decimal, currency: str, method: str | None) -> None:
        if payment_id in self.payments:
            if self.payments[payment_id] == amount:
                return  # the payment system told us twice: counted once
            raise Refused(
                "payment_already_recorded", f"Payment {payment_id} was recorded with another amount."
            )
        self._refuse_if_closed()
        if currency != self.currency:
            raise Refused("currency_mismatch", f"The booking is in {self.currency}, not {currency}.")
        self._payment_recorded(payment_id=payment_id, amount=amount, method=method)
        self._follow_amounts("payment")

    @event("PaymentRecorded")
    def _payment_recorded(self, payment_id: str, amount: Decimal, method: str | None) -> None:
        self.payments[payment_id] = amount
        self.amount_paid += amount

    def change_status(self, status: str, reason: str | None, custom: Mapping[str, CustomStatus]) -> None:
        if status == self.status:
            return
        if status == STOP:
            raise Refused("use_cancel", "Use CancelBooking to cancel: it records the refund due.")
        if status == VOID:
            raise Refused("use_void", "Use VoidBooking to void a booking.")
        check_transition(self.status, status, self.amount_paid, self.total, custom)
        self._status_changed(
            status_before=self.status,
            status=status,
            reason=reason,
            cause="command",
            locks_inventory=statuses.locks_inventory(status, custom),
        )

    @event("StatusChanged")
    def _status_changed(
        self, status_before: str, status: str, reason: str | None, cause: str, locks_inventory: bool
    ) -> None:
        self.status = status

    def _follow_amounts(self, cause: str) -> None:
        status = status_for_amounts(self.status, self.amount_paid, self.total)
        if status != self.status:  # always PART or PAID: system statuses that lock inventory
            self._status_changed(
                status_before=self.status, status=status, reason=None, cause=cause, locks_inventory=True
            )

    # ------------------------------------------------------------------ modify

    def modify(
        self,
        *,
        now: datetime,
        rule: Rule,
        customer: Mapping[str, str] | None = None,
        lines: list[dict[str, Any]] | None = None,
        form: Mapping[str, str | None] | None = None,
        reason: str | None = None,
        override: bool = False,
        request: str | None = None,
    ) -> list[str]:
        """Apply the changes that differ from what the booking has; returns them in words
        (nothing is recorded when nothing differs). Without `override`, the customer rule must
        allow it. `request` identifies a customer's request, to answer a repeat of it."""
        refusal = rule.refusal(self.status, self.starts_at, now)
        if refusal is not None and not override:
            raise refusal
        self._refuse_if_closed()
        subject = self.id
        changes: list[str] = []
        new_customer = None
        if customer:
            if self.customer_erased:
                raise Refused("customer_erased", "The customer details of this booking were erased.")
            current = {k: (v.value if v is not None else None) for k, v in self.customer.items()}
            changed = {k: v for k, v in customer.items() if v is not None and current.get(k) != v}
            if changed:
                new_customer = {**self.customer, **{k: Personal(subject, v) for k, v in changed.items()}}
                changes += [f"{field.capitalize()} changed." for field in sorted(changed)]
        new_form = None
        if form:
            if self.customer_erased:
                raise Refused("customer_erased", "The customer details of this booking were erased.")
            current_form = {k: v.value for k, v in self.form.items()}
            wanted = {**current_form, **form}
            wanted = {k: v for k, v in wanted.items() if v is not None}
            if wanted != current_form:
                new_form = {
                    k: self.form[k] if current_form.get(k) == v else Personal(subject, v)
                    for k, v in wanted.items()
                }
                changes.append("Booking form answers changed.")
        new_total = None
        if lines is not None and lines != self.lines:
            new_total = booking_lines.total(lines)
            changes += booking_lines.describe(self.lines, lines, self.frozen_terms.timezone)
            if new_total != self.total:
                changes.append(f"Total {self.total:.2f} to {new_total:.2f} {self.currency}.")
        if not changes:
            return []
        self._modified(
            customer=new_customer,
            lines=lines if new_total is not None else None,
            form=new_form,
            total=new_total,
            changes=changes,
            reason=reason,
            rules_overridden=refusal is not None,
            rule=rule.describe(),
            based_on_version=self.version,
            request=request,
        )
        self._follow_amounts("modification")
        return changes

    @event("Modified")
    def _modified(
        self,
        customer: Customer | None,
        lines: list[dict[str, Any]] | None,
        form: dict[str, Personal] | None,
        total: Decimal | None,
        changes: list[str],
        reason: str | None,
        rules_overridden: bool,
        rule: dict[str, Any],
        based_on_version: int,
        request: str | None,
    ) -> None:
        if customer is not None:
            self.customer = customer
        if lines is not None:
            self.lines = lines
        if form is not None:
            self.form = form
        if total is not None:
            self.total = total

    # ------------------------------------------------------------------ cancel, void

    def cancel(
        self,
        *,
        now: datetime,
        rule: Rule,
        reason: str | None,
        override: bool = False,
        refund_due: Decimal | None = None,
    ) -> None:
        """Cancel; without `override`, only when the customer rule allows it. The refund due
        is what was paid unless staff say less; nothing is refunded here."""
        refusal = rule.refusal(self.status, self.starts_at, now)
        if refusal is not None and not override:
            raise refusal
        self._refuse_if_closed()
        refund = self.amount_paid if refund_due is None else refund_due
        if refund > self.amount_paid:
            raise Refused("refund_exceeds_paid", f"Only {self.amount_paid:.2f} {self.currency} was paid.")
        self.record_cancellation(
            status_before=self.status,
            refund_due=refund,
            # Free text, often about the customer: sealed with the booking's customer details
            # (erased with them), never stored or published in the clear.
            reason=Personal(self.id, reason) if reason else None,
            cancelled_at=now,
            rules_overridden=refusal is not None,
            rule=rule.describe(),
            based_on_version=self.version,
        )

    @event("Cancelled")
    def record_cancellation(
        self,
        status_before: str,
        refund_due: Decimal,
        reason: Personal | str | None,  # (a str: recorded before reasons were sealed)
        cancelled_at: datetime,
        rules_overridden: bool = False,
        rule: dict[str, Any] | None = None,
        based_on_version: int | None = None,
    ) -> None:
        self.status = STOP
        self.cancellation = {
            "status_before": status_before,
            "refund_due": refund_due,
            "reason": reason,
            "cancelled_at": cancelled_at,
            "rules_overridden": rules_overridden,
            "based_on_version": based_on_version,
        }

    def void(self, reason: str | None) -> None:
        if self.status == VOID:
            return
        if self.amount_paid > 0:
            raise Refused("void_with_payments", "A booking with payments cannot be voided; cancel it.")
        check_transition(self.status, VOID, self.amount_paid, self.total, {})
        self._voided(status_before=self.status, reason=reason)

    @event("Voided")
    def _voided(self, status_before: str, reason: str | None) -> None:
        self.status = VOID

    # ------------------------------------------------------------------ erasure

    def erase_customer(self) -> None:
        """Record that the customer details are erased (their subject key is deleted after)."""
        if not self.customer_erased:
            self._customer_erased()

    @event("CustomerErased")
    def _customer_erased(self) -> None:
        self.customer_erased = True
        self.customer = {k: Personal(v.subject_id, None) if v else None for k, v in self.customer.items()}
        self.form = {k: Personal(v.subject_id, None) for k, v in self.form.items()}

    def _refuse_if_closed(self) -> None:
        if self.status in CLOSED:
            raise self._closed()

    def _closed(self) -> Refused:
        word = "cancelled" if self.status == STOP else "void"
        return Refused("booking_closed", f"The booking is {word}: nothing more can change.")

