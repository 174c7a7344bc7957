"""How the accounts API answers each kind of refusal: the one table of its edge (the domain
says why it refuses, never with which HTTP status; `backbone.http.Refusals`)."""

from __future__ import annotations

from backbone.http import Refusal, Refusals
from services.accounts.backoffice import EmailBlocked
from services.accounts.core import LoginsDisabled
from services.accounts.customers import AddressTaken, InvalidCredentials, SessionEnded, WrongPassword
from services.accounts.domainmodel import AccountInactive, LinkRefused, NothingToVerify, PasswordNotExpected
from services.accounts.passwords import WeakPassword
from services.accounts.ratelimits import RateLimited, RateLimitsUnavailable

REFUSALS = Refusals(
    {
        LinkRefused: Refusal(400),  # invalid, used, replaced or expired: one answer for all
        InvalidCredentials: Refusal(401),
        SessionEnded: Refusal(401),
        LoginsDisabled: Refusal(403),
        WrongPassword: Refusal(403),
        AccountInactive: Refusal(409),
        AddressTaken: Refusal(409),
        EmailBlocked: Refusal(409),
        NothingToVerify: Refusal(409),
        PasswordNotExpected: Refusal(422, "Invalid request"),
        WeakPassword: Refusal(422),
        RateLimited: Refusal(
            429,
            "Too many requests",
            code="rate_limited",
            headers=lambda limited: {"Retry-After": str(limited.retry_after)},
        ),
        # The shared counters (Redis) do not answer: never let through uncounted.
        RateLimitsUnavailable: Refusal(
            503,
            "Service unavailable",
            code="rate_limits_unavailable",
            headers=lambda unavailable: {"Retry-After": str(unavailable.retry_after)},
        ),
    }
)
