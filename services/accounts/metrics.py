"""Prometheus metrics of the accounts service (exposed with the backbone's at GET /metrics)."""

from __future__ import annotations

from prometheus_client import Counter

from backbone.metrics import REGISTRY

deferred = Counter(
    "accounts_deferred_requests_total",
    "Anonymous requests (claim, resend, magic link, reset) worked on after answering them.",
    ["request", "outcome"],  # done | failed
    registry=REGISTRY,
)
rate_limited = Counter(
    "accounts_rate_limited_total",
    "Requests refused with 429, by action and by what ran out (email or client).",
    ["action", "scope"],
    registry=REGISTRY,
)
rate_limits_unavailable = Counter(
    "accounts_rate_limits_unavailable_total",
    "Limited requests refused with 503 because the shared counters (Redis) did not answer.",
    ["action"],
    registry=REGISTRY,
)
logins = Counter(
    "accounts_logins_total",
    "Customer logins, by method (password, magic_link) and outcome (ok, refused).",
    ["method", "outcome"],
    registry=REGISTRY,
)
