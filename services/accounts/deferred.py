"""Work asked for by anonymous requests about an email address, done after the answer left.

Claim, resend, magic-link and reset requests must answer the same, in the same time, whether or
not the address has an account: the work behind them differs (a new account, a link for an
existing one, nothing at all) and so does its cost (hashing, writing). So the HTTP handler
checks what does not depend on the address (the body, the tenant's settings, rate limits),
queues the work here and answers 202 at once; one worker does the work in order.

The queue is bounded (a full queue answers 503, whatever the address), and so is each client's
share of it (`per_client` waiting requests per client network, then 429): a few dozen clients
cannot fill it and make claims answer 503 for everyone. On shutdown the worker finishes what
was accepted. A request that fails while a store does not answer (an outage, `backbone.faults`)
is retried with backoff until the store is back, in order; one that fails with every store
answering is dropped and counted (the customer asks again). A process killed with work still
queued loses those requests (a few milliseconds' worth): nothing was recorded, nothing was
sent, and the customer asks again.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

from backbone import context, tracing
from backbone.auth import client_network
from backbone.faults import classify
from backbone.http import Problem, run_sync
from backbone.logging import get_logger
from services.accounts import metrics

log = get_logger(__name__)


class Deferred:
    def __init__(
        self,
        capacity: int = 1000,
        per_client: int = 10,
        probe: Callable[[], list[str]] = list,
        max_pause: float = 5.0,
    ):
        self.queue: asyncio.Queue[tuple[context.Cause, str, Callable[[], object], str]] = asyncio.Queue(
            capacity
        )
        self.per_client = per_client
        self.waiting: Counter[str] = Counter()  # requests queued, per client network
        self.probe = probe  # the stores that do not answer (ServiceApplication.unreachable_stores)
        self.max_pause = max_pause

    def submit(self, what: str, work: Callable[[], object], client: str = "unknown") -> None:
        network = client_network(client)
        if self.waiting[network] >= self.per_client:
            raise Problem(
                429,
                "Too many requests",
                "Too many of your requests are waiting already; try again in a minute.",
                code="rate_limited",
            )
        try:
            self.queue.put_nowait((context.current(), what, work, network))
        except asyncio.QueueFull:
            raise Problem(
                503, "Busy", "Too many requests are waiting right now; try again in a minute.", code="busy"
            ) from None
        self.waiting[network] += 1

    async def run(self) -> None:
        try:
            while True:
                await self._do(*await self.queue.get())
        except asyncio.CancelledError:
            while not self.queue.empty():  # stopping: finish what was accepted
                await self._do(*self.queue.get_nowait())
            raise

    async def join(self) -> None:
        """Until everything submitted so far is done (for tests and benchmarks)."""
        await self.queue.join()

    async def _do(self, cause: context.Cause, what: str, work: Callable[[], object], network: str) -> None:
        try:
            failures = 0
            while True:
                try:
                    await run_sync(_within, cause, work)
                    metrics.deferred.labels(what, "done").inc()
                    return
                except Exception as error:
                    outage = await run_sync(classify, error, self.probe)
                    if outage is None:  # the request's own failure: must not stop the others
                        metrics.deferred.labels(what, "failed").inc()
                        log.warning(
                            "deferred request failed", request=what, error=f"{type(error).__name__}: {error}"
                        )
                        return
                    failures += 1
                    pause = min(self.max_pause, 0.1 * 2**failures)
                    metrics.deferred.labels(what, "retried").inc()
                    log.warning(
                        "a store is unavailable; the deferred request will be retried",
                        request=what,
                        pause_seconds=pause,
                        error=f"{type(outage).__name__}: {outage}",
                    )
                    await asyncio.sleep(pause)
        finally:
            self.waiting[network] -= 1
            if self.waiting[network] <= 0:
                del self.waiting[network]
            self.queue.task_done()


def _within(cause: context.Cause, work: Callable[[], object]) -> object:
    # In the trace of the request that asked for it (when tracing is on).
    with (
        tracing.span("accounts deferred work", cause.traceparent),
        context.caused_by(cause.actor, cause.tenant_id, cause.correlation_id, cause.causation_id),
    ):
        return work()
