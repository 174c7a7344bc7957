"""How the bookings HTTP API answers each kind of refusal: the one table of its edge (the
domain and the application say why they refuse, never with which HTTP status;
`backbone.http.Refusals`)."""

from __future__ import annotations

from backbone.http import Refusal, Refusals
from services.bookings.application import ChangedMeanwhile, CustomerRefused
from services.bookings.errors import OF_THE_REQUEST, Refused

# Why a customer behind a valid session token may not use the customer routes now.
_CUSTOMER_REFUSED = {
    "not_verified": 403,
    "session_revoked": 401,
    "account_archived": 403,
    "logins_disabled": 403,
}

REFUSALS = Refusals(
    {
        # A refusal of what was asked is 422; of the state the booking is in, 409.
        Refused: Refusal(lambda refused: 422 if refused.code in OF_THE_REQUEST else 409),
        CustomerRefused: Refusal(lambda refused: _CUSTOMER_REFUSED[refused.code], "Not allowed"),
        ChangedMeanwhile: Refusal(409, "Changed meanwhile", code="concurrent_change"),
    }
)
