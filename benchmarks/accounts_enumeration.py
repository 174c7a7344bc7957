"""How long the accounts service takes to answer about a known and an unknown email address.

    python -m benchmarks.accounts_enumeration [--samples 200]

Starts a broker (or uses KAFKA_BOOTSTRAP_SERVERS) and the accounts service as an OS process,
makes one verified account ("known"), then sends the requests a stranger can make about an
address, alternating the known address and fresh unknown ones: claim, resend, magic link,
password reset, and a login with a wrong password. Prints the latency distributions and a
two-sample Kolmogorov-Smirnov test per request: a small D (and a large p) means the timings do
not tell the two apart. Figures, not a test: the machine's load moves them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from tests.support.system import System, set_tenant_settings, verified_customer

TENANT = "bench"
PASSWORD = "kayak-at-dawn-on-a-still-lake"  # noqa: S105 - a test customer's
NO_LIMITS = json.dumps(
    {
        f"{action}.{scope}": "1000000/hour"
        for action in ("claim", "verification", "magic_link", "password_reset", "login", "link")
        for scope in ("email", "client")
        if not (action == "link" and scope == "email")
    }
)


def ks(a: list[float], b: list[float]) -> tuple[float, float]:
    """The two-sample Kolmogorov-Smirnov statistic D and its asymptotic p-value."""
    a, b = sorted(a), sorted(b)
    i = j = 0
    d = 0.0
    while i < len(a) and j < len(b):
        if a[i] <= b[j]:
            i += 1
        else:
            j += 1
        d = max(d, abs(i / len(a) - j / len(b)))
    n = len(a) * len(b) / (len(a) + len(b))
    lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
    p = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return d, min(1.0, max(0.0, p))


def measure(client: httpx.Client, samples: int, known: str) -> dict[str, dict[str, list[float]]]:
    requests = {
        "claim": lambda e: ("accounts", {"email": e, "name": "X"}),
        "resend": lambda e: ("verification-requests", {"email": e}),
        "magic link": lambda e: ("magic-links", {"email": e}),
        "password reset": lambda e: ("password-resets", {"email": e}),
        "login, wrong password": lambda e: ("sessions", {"email": e, "password": "wrong-" + PASSWORD}),
    }
    timings: dict[str, dict[str, list[float]]] = {name: {"known": [], "unknown": []} for name in requests}
    for i in range(samples):
        for name, build in requests.items():
            for kind in ("known", "unknown") if i % 2 else ("unknown", "known"):
                email = known if kind == "known" else f"nobody-{uuid.uuid4().hex[:10]}@example.com"
                path, body = build(email)
                started = time.perf_counter()
                response = client.post(f"/v1/tenants/{TENANT}/{path}", json=body)
                timings[name][kind].append(time.perf_counter() - started)
                assert response.status_code in (202, 401), response.text
    return timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    kafka = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        from deploy.local.kafka import LocalKafka

        kafka = LocalKafka()
        bootstrap = kafka.start()
    try:
        with tempfile.TemporaryDirectory() as root:
            system = System(
                Path(root), bootstrap, smtp_port=1, overrides={"accounts": {"RATE_LIMITS": NO_LIMITS}}
            )
            system.start("accounts")
            try:
                set_tenant_settings(system, TENANT, customer_logins_enabled=True)
                known = "known@example.com"
                verified_customer(system, None, TENANT, known, PASSWORD)
                with httpx.Client(base_url=system.accounts.url, timeout=60) as client:
                    measure(client, 5, known)  # warm up
                    timings = measure(client, args.samples, known)
            finally:
                system.stop()
    finally:
        if kafka is not None:
            kafka.close()
    print(f"{args.samples} requests per row, known address vs fresh unknown ones, alternating (ms)")
    print(f"{'request':<24}{'known p50':>10}{'p90':>8}{'unknown p50':>13}{'p90':>8}{'KS D':>8}{'p':>7}")
    for name, kinds in timings.items():
        k, u = (sorted(x * 1000 for x in kinds[kind]) for kind in ("known", "unknown"))
        d, p = ks(k, u)
        p90 = lambda xs: xs[int(0.9 * (len(xs) - 1))]  # noqa: E731
        print(
            f"{name:<24}{statistics.median(k):>10.1f}{p90(k):>8.1f}"
            f"{statistics.median(u):>13.1f}{p90(u):>8.1f}{d:>8.3f}{p:>7.2f}"
        )


if __name__ == "__main__":
    main()
