"""Sentences a customer reads in several places, written once.

The refund note is the product's promise about money: a cancellation refunds nothing by
itself; the business has been told what was paid, and the customer contacts the business to
get the refund. The bookings API (which does not know the business's name), the portal's pages
and the notifier's emails all say it with `refund_note`, filling in what they know.
"""

from __future__ import annotations

_REFUND = {
    "en": (
        "Refunds are not automatic. {business} has been told what you paid and what is due to you; "
        "{contact} to arrange your refund{quoting}."
    ),
    "de": (
        "Die Erstattung erfolgt nicht automatisch. {business} wurde mitgeteilt, was Sie bezahlt haben "
        "und was Ihnen zusteht; {contact}, um die Erstattung zu vereinbaren{quoting}."
    ),
}
_BUSINESS = {"en": "The business", "de": "Das Unternehmen"}
_CONTACT = {"en": "contact them", "de": "wenden Sie sich an das Unternehmen"}
_WRITE = {"en": "write to {address}", "de": "schreiben Sie an {address}"}
_REPLY = {
    "en": "reply to this email or write to {address}",
    "de": "antworten Sie auf diese E-Mail oder schreiben Sie an {address}",
}
_QUOTING = {
    "en": ", quoting your booking code {code}",
    "de": ", und nennen Sie dabei Ihren Buchungscode {code}",
}


def refund_note(
    language: str = "en",
    *,
    business_name: str | None = None,
    contact: str | None = None,
    booking_code: str | None = None,
    in_email: bool = False,
) -> str:
    """The refund sentence in `language` ("en" or "de"; anything else: English)."""
    lang = language if language in _REFUND else "en"
    how = (_REPLY if in_email else _WRITE)[lang].format(address=contact) if contact else _CONTACT[lang]
    return _REFUND[lang].format(
        business=business_name or _BUSINESS[lang],
        contact=how,
        quoting=_QUOTING[lang].format(code=booking_code) if booking_code else "",
    )
