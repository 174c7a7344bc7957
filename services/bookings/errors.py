"""Why the bookings service refuses something: one machine-readable code per reason.

The same codes reach a publishing service (`reason_code` of a `CommandOutcome`) and a customer
(`code` of an HTTP problem). `REASON_CODES` is the list the publisher guide documents (a test
keeps the guide complete).
"""

from __future__ import annotations

from backbone.domain import DomainError

REASON_CODES: dict[str, str] = {
    # the booking and the command
    "booking_exists": "A booking with this booking_id was already placed.",
    "booking_not_found": "No booking with this id for this tenant (not final: send it again once "
    "the PlaceBooking was accepted).",
    "booking_changed": "The booking is no longer at the version the sender saw.",
    "booking_closed": "The booking is cancelled or void: nothing more can change.",
    "currency_mismatch": "The amount is not in the booking's currency.",
    "payment_already_recorded": "This payment_id was already recorded for another amount.",
    "refund_exceeds_paid": "refund_due is more than was paid.",
    "nothing_to_change": "A modification that changes nothing.",
    "invalid_change": "A modification that cannot apply (a line that does not exist, dates in the "
    "past, no line left).",
    "not_allowed_for_customer": "A customer may not do this (change the email, override rules).",
    "customer_erased": "The booking's customer details were erased; new details cannot be added.",
    # statuses
    "unknown_status": "Neither a system status nor an active custom status of the tenant.",
    "transition_not_allowed": "The transition table does not allow this change of status.",
    "status_follows_payments": "PART and PAID follow from the amounts (record a payment).",
    "void_with_payments": "A booking with payments cannot be voided: cancel it.",
    "use_cancel": "Cancelling has its own command (CancelBooking), with the refund due.",
    "use_void": "Voiding has its own command (VoidBooking).",
    "reserved_status": "System statuses cannot be defined or retired.",
    "status_not_found": "The tenant has no such custom status.",
    # customer accounts ("require login to book")
    "login_required": "The tenant requires bookings to be made under a verified customer account.",
    "account_not_verified": "The account is unknown here or not verified (not final: its events "
    "may still be on their way).",
    "account_archived": "The customer account is archived.",
    "account_erased": "The customer account was erased.",
    # the customer rules (self-service, and commands on a customer's behalf)
    "setting_off": "The tenant does not let customers do this online.",
    "status_blocks": "The booking's status stops customers from doing this online.",
    "cutoff_passed": "Too close to the start for customers to do this online.",
    "already_started": "The booking has already started.",
    "already_closed": "The booking is already cancelled or void.",
}

# Refusals of what was asked rather than of the state the booking is in (HTTP answers them
# with 422, not 409: services/bookings/api_errors.py).
OF_THE_REQUEST = frozenset({"invalid_change", "nothing_to_change", "not_allowed_for_customer"})


class Refused(DomainError):
    """A business rule refused a command or a customer's request; `code` is in REASON_CODES."""

    def __init__(self, code: str, message: str, *, final: bool = True):
        assert code in REASON_CODES, code
        super().__init__(message, code=code, final=final)


class NotEligible(Refused):
    """The customer rules do not allow this: setting_off, status_blocks, cutoff_passed,
    already_started or already_closed."""
