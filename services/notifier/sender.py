"""Delivering queued emails over SMTP, each exactly once as far as SMTP allows.

One batch at a time:

1. the due emails (read model) get an attempt each, recorded in ONE transaction before any of
   them is sent (`Notifier.start_attempts`);
2. they are rendered, the whole batch in one worker thread (its tenants' branding read once),
   and sent over a few SMTP connections in parallel (`SMTP_CONNECTIONS`; kept open from one
   batch to the next, and for `KEEP_IDLE_SECONDS` without work);
3. each server answer is recorded as soon as it comes: a recorder task commits whatever
   answers have arrived since its last commit (group commit), waiting at most
   `RECORD_LINGER_SECONDS` for more while others are in flight, so no answer waits longer than
   that and one commit, however many emails are in flight.

What remains is the protocol's own window: if the process dies after the server accepted a
message (its 250 reply to the end of DATA) and before that answer's commit (at most
`RECORD_LINGER_SECONDS` and a commit later), the email is found
"interrupted" (an attempt without a result) and, once the attempt's lease has run out, sent
again with the same Message-ID, so that the receiving side can recognise the copy. Emails
whose attempt was recorded but whose transaction had not reached the end of DATA are sent
again too, but were never delivered: no copy. Nothing else can produce a second copy: a
replayed or redelivered event finds its email already queued (see `handlers.queue`).

The sender wakes up when the inbox stores a new email, and waits for the read model to show it
by waiting for the projection's progress (in this process: no polling); it looks for due
retries once a second otherwise.

A 5xx reply parks the email at once; a 4xx reply or a connection problem is retried with
exponential backoff (`DeliveryPolicy`), so an SMTP server that is down for minutes loses
nothing. When the server cannot be reached, the rest of the batch waits for the next retry
instead of trying to connect once per email.

A store outage never parks or skips an email: reading what is due fails and is retried every
second; answers already received wait in memory until they can be recorded; a batch whose
preparation fails ends its attempts as temporary failures. While it retries, the
`consumer_stalled` gauge is 1 for `notifier.sender`.

Several instances send side by side, each claiming its own emails: on PostgreSQL the due rows
are selected `FOR UPDATE SKIP LOCKED` and kept locked until their attempts are recorded, so
another sender skips them and takes the next ones; once recorded, an attempt makes the email
not due (checked on the aggregate, `Notifier.start_attempts`). So no email is attempted by
two senders, and throughput grows with instances. (SQLite: one process per store.)
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import aiosmtplib
from opentelemetry.trace import SpanKind
from prometheus_client import Counter, Gauge, Histogram

from backbone import context, metrics, tracing
from backbone.credentials import unseal
from backbone.faults import cause_of
from backbone.follower import Wakeup
from backbone.http import run_sync
from backbone.logging import get_logger
from backbone.personal import Personal
from backbone.readmodel import Projection, ReadModel
from services.notifier import views
from services.notifier.application import Delivered, NotDelivered, Notifier, Outcome, Withdrawn
from services.notifier.domainmodel import QUEUED, RETRYING, SENDING, Email
from services.notifier.rendering import Branding, Rendered, Renderer
from services.notifier.smtp import ConnectFailed, Mailer, without_addresses

log = get_logger(__name__)

COUNT_EVERY_SECONDS = 5.0
"""How often the `notifier_emails_in_log` gauge is refreshed: counting scans the delivery log,
which grows, and an email queued meanwhile would wait for the count to finish."""

RECORD_LINGER_SECONDS = 0.02
"""How long an answer may wait for others before their group is committed, while emails of the
batch are still in flight (the batch's last answers are committed at once). Recording every
answer on its own cost more CPU than sending the email; waiting adds at most this to the
window in which a crash makes an email go out twice (see above)."""

FRESH_SECONDS = 1.0
"""A connection used this recently is used again without asking the server first (NOOP): at a
steady trickle of emails (one batch per cancellation), the NOOP was one more round trip before
every batch. A server closing a connection is seen at once (`is_connected`); one that vanished
without closing it makes at most that batch's emails fail for now and be retried."""

KEEP_IDLE_SECONDS = 30.0
"""How long an SMTP connection is kept open without work: the next email needs no new
connection (TCP, greeting, EHLO, perhaps TLS and a login), well within servers' idle timeouts
(RFC 5321 asks them to wait at least 5 minutes)."""

emails_total = Counter(
    "notifier_emails_total",
    "Results of delivery attempts, by kind of email.",
    ["template", "outcome"],  # sent | failed | refused | withdrawn
    registry=metrics.REGISTRY,
)
smtp_seconds = Histogram(
    "notifier_smtp_transaction_seconds",
    "Time of one SMTP mail transaction.",
    registry=metrics.REGISTRY,
)
queue_depth = Gauge(
    "notifier_email_queue_depth",
    "Emails still to deliver (queued, being sent, or waiting to retry), measured every few "
    "seconds whatever the sender is doing.",
    registry=metrics.REGISTRY,
)
emails_by_status = Gauge(
    "notifier_emails_in_log",
    "Emails in the delivery log, by status (parked ones need an operator).",
    ["status"],
    registry=metrics.REGISTRY,
)


@dataclass
class _Ready:
    """An email rendered, to send."""

    email: Email
    rendered: Rendered


@dataclass
class _Batch:
    deadline: float  # monotonic: no transaction starts after it (the attempts' lease runs out)
    unreachable: str | None = None  # set once the server could not be reached


class Sender:
    name = "notifier.sender"

    def __init__(
        self,
        notifier: Notifier,
        read_model: ReadModel,
        projection: Projection,
        mailer: Mailer,
        renderer: Renderer,
        sealing_private_key: bytes,
        batch_size: int = 100,
        connections: int = 4,
        count_every: float = 5.0,
    ):
        self.notifier = notifier
        self.read_model = read_model
        self.projection = projection
        self.mailer = mailer
        self.renderer = renderer
        self.batch_size = batch_size
        self.connections = connections
        self.count_every = count_every
        self._key = sealing_private_key
        self._wakeup = Wakeup(notifier)
        self._templates: dict[UUID, str] = {}  # of the batch in flight, for the metrics
        # Open connections kept between batches, each with when (monotonic) it was last used.
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self._busy_at = time.monotonic()  # when the last batch was delivered
        self._counted_at = float("-inf")  # when the gauge was last refreshed

    async def run(self) -> None:
        self._wakeup.bind()
        while True:
            _raise_if_cancelled()
            try:
                # Whatever was saved before now, this cycle sees: only a save made after it
                # (an email queued meanwhile, or this batch's own attempts and answers) makes the
                # next sleep end at once. Before, every batch was followed by two empty cycles.
                self._wakeup.clear()
                await self._read_model_caught_up()
                with context.working():  # the batch's log lines share a correlation id
                    emails, prepared = await run_sync(self._claim_and_prepare)  # one thread hop
                    if emails and await self.deliver(emails, prepared):
                        metrics.stalled.labels(self.name).set(0)
                        self._busy_at = time.monotonic()
                        continue
                if time.monotonic() - self._busy_at > KEEP_IDLE_SECONDS:
                    await self._close_idle()  # nothing to send for a while: none kept open
                if time.monotonic() - self._counted_at >= COUNT_EVERY_SECONDS:
                    await run_sync(self._count)
                    self._counted_at = time.monotonic()
                metrics.stalled.labels(self.name).set(0)
            except asyncio.CancelledError:
                for smtp, _ in self._idle:
                    smtp.close()
                raise
            except Exception as error:  # the store or read model is down, most likely: retry
                cause = await run_sync(cause_of, error, self.notifier.unreachable_stores)
                metrics.stalled.labels(self.name).set(1)
                metrics.retries.labels(self.name, cause).inc()
                if cause == "outage":
                    log.warning("a store is unavailable; the sender retries shortly", error=str(error))
                else:
                    log.exception("sender cycle failed; retrying shortly")
            await self._wakeup.sleep(1.0)

    async def watch_queue(self) -> None:
        """The queue gauges (`notifier_email_queue_depth`, `notifier_emails_in_log`) every
        `count_every` seconds: live while a long backlog is being sent, or nothing moves."""
        while True:
            try:
                await run_sync(self._count)
            except Exception as error:  # an outage: readiness and the sender report it
                log.warning("cannot count the email queue", error=f"{type(error).__name__}: {error}")
            await asyncio.sleep(self.count_every)

    async def send(self, email_ids: list[UUID]) -> bool:
        """Deliver these emails (those still due); False if none was."""
        return await self.deliver(await run_sync(self.notifier.start_attempts, email_ids))

    async def deliver(self, emails: list[Email], prepared: list[_Ready | Outcome] | None = None) -> bool:
        """Deliver emails whose attempts were just recorded (`prepared`: as `_prepared` gave
        them, if it did already); False if there are none."""
        if not emails:
            return False
        started = time.monotonic()
        batch = _Batch(deadline=started + self.notifier.policy.lease.total_seconds() / 2)
        if prepared is None:
            prepared = await run_sync(self._prepared, emails)
        results: asyncio.Queue[Outcome | None] = asyncio.Queue()
        work: asyncio.Queue[_Ready] = asyncio.Queue()
        for item in prepared:
            if isinstance(item, _Ready):
                work.put_nowait(item)
            else:
                results.put_nowait(item)
        attempted = {email.id: email for email in emails}  # recorded results reuse these
        recorder = asyncio.create_task(self._record(results, attempted))
        workers = [
            asyncio.create_task(self._work(work, results, batch))
            for _ in range(min(self.connections, work.qsize()))
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
            results.put_nowait(None)
            # Answers already received are recorded even when we are being stopped: each one
            # recorded is one email that will not be sent again after the restart.
            await asyncio.shield(recorder)
        log.info(
            "batch delivered",
            emails=len(emails),
            seconds=round(time.monotonic() - started, 3),
            unreachable=batch.unreachable is not None,
        )
        return True

    # ------------------------------------------------------------------- the SMTP side

    async def _work(self, work: asyncio.Queue[_Ready], results: asyncio.Queue[Any], batch: _Batch) -> None:
        smtp = await self._reuse()
        keep = False
        try:
            while not work.empty():
                _raise_if_cancelled()
                item = work.get_nowait()
                email = item.email
                if batch.unreachable is not None:
                    results.put_nowait(NotDelivered(email.id, email.attempts, batch.unreachable, False))
                    continue
                if time.monotonic() > batch.deadline:
                    error = "not sent in time (the SMTP server is slow); will retry"
                    results.put_nowait(NotDelivered(email.id, email.attempts, error, False))
                    continue
                rendered = item.rendered
                if smtp is None or not smtp.is_connected:
                    try:
                        smtp = await self.mailer.connect()
                    except ConnectFailed as error:
                        batch.unreachable = str(error)
                        log.warning("SMTP server unreachable; the batch waits", error=str(error))
                        results.put_nowait(NotDelivered(email.id, email.attempts, str(error), False))
                        continue
                began = time.perf_counter()
                with _span(email) as span:
                    answer = await self.mailer.send(
                        smtp,
                        self.renderer.sender_address,
                        str(email.recipient),
                        rendered.raw,
                        rendered.smtputf8,
                    )
                    if span is not None:  # (replies are kept with addresses masked)
                        span.set_attributes({"smtp.accepted": answer.accepted, "smtp.reply": answer.reply})
                smtp_seconds.observe(time.perf_counter() - began)
                if answer.accepted:
                    results.put_nowait(Delivered(email.id, email.attempts, answer.reply, rendered.subject))
                else:
                    log.warning(
                        "email refused",
                        email_id=str(email.id),
                        template=email.template,
                        reply=answer.reply,
                        permanent=answer.permanent,
                    )
                    results.put_nowait(NotDelivered(email.id, email.attempts, answer.reply, answer.permanent))
            keep = True
        finally:
            if keep and smtp is not None and smtp.is_connected:
                self._idle.append((smtp, time.monotonic()))
            else:
                await self.mailer.close(smtp)

    async def _reuse(self) -> aiosmtplib.SMTP | None:
        """A connection left open by the last batch, if the server still answers on it: asked
        (NOOP) only of one unused for `FRESH_SECONDS`; one the server closed is known as soon
        as its end arrives (`is_connected`)."""
        while self._idle:
            smtp, used_at = self._idle.pop()
            if time.monotonic() - used_at < FRESH_SECONDS and smtp.is_connected:
                return smtp
            if await self.mailer.still_open(smtp):
                return smtp
        return None

    async def _close_idle(self) -> None:
        while self._idle:
            await self.mailer.close(self._idle.pop()[0])

    async def _record(self, results: asyncio.Queue[Outcome | None], attempted: dict[UUID, Email]) -> None:
        finished = False
        while not finished:
            group = [await results.get()]
            # More answers are on their way while other emails are in flight: gather them for
            # a moment, so that one commit (and one projection batch) records several.
            deadline = asyncio.get_running_loop().time() + RECORD_LINGER_SECONDS
            while group[-1] is not None and len(group) < self.batch_size:
                if results.empty():
                    try:
                        async with asyncio.timeout_at(deadline):
                            group.append(await results.get())
                    except TimeoutError:
                        break
                else:
                    group.append(results.get_nowait())
            finished = group[-1] is None
            outcomes = [o for o in group if o is not None]
            if outcomes:
                await self._commit(outcomes, attempted)

    async def _commit(self, outcomes: list[Outcome], attempted: dict[UUID, Email]) -> None:
        for attempt in range(1, 1_000_000):
            try:
                await run_sync(self.notifier.record_outcomes, outcomes, attempted)
                break
            except Exception:  # the store is down: keep the answers, try again
                pause = min(30.0, 0.2 * 2**attempt)
                log.exception("cannot record delivery results; retrying", pause_seconds=pause)
                await asyncio.sleep(pause)
        for outcome in outcomes:
            template = self._templates.get(outcome.email_id, "unknown")
            emails_total.labels(template, _label(outcome)).inc()

    # ------------------------------------------------------------------- the store side

    def _claim_and_prepare(self) -> tuple[list[Email], list[_Ready | Outcome]]:
        """`_claim`, then `_prepared` (blocking): the claimed emails and what to do with each."""
        emails = self._claim()
        return emails, self._prepared(emails) if emails else []

    def _claim(self) -> list[Email]:
        """Claim a batch of due emails no other sender has claimed, and record their attempts
        (blocking). The rows stay locked (PostgreSQL) until the attempts are committed."""
        with self.read_model.engine.begin() as conn:
            due = views.due(conn, self.notifier.clock(), self.batch_size, skip_locked=True)
            return self.notifier.start_attempts(due) if due else []

    def _count(self) -> None:
        with self.read_model.engine.connect() as conn:
            counts = views.count_by_status(conn)
        for status, count in counts.items():
            emails_by_status.labels(status).set(count)
        queue_depth.set(sum(counts[status] for status in (QUEUED, SENDING, RETRYING)))

    async def _read_model_caught_up(self, patience: float = 10.0) -> None:
        """Wait until the read model shows everything stored so far (our own last results
        included), so that `due` does not offer what was just sent."""
        head = await run_sync(self.notifier.head)
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            if self.projection.leading:  # it moves in another task here: woken as it does
                await self.projection.reached(head, deadline - time.monotonic())
                return
            else:  # it runs in another instance (its leader): its stored position
                if await run_sync(self._projected) >= head:
                    return
                await asyncio.sleep(0.1)

    def _projected(self) -> int:
        return self.read_model.position(self.projection.name)

    def _prepared(self, emails: list[Email]) -> list[_Ready | Outcome]:
        """`_prepare`, or, if it fails, a temporary failure for each email (blocking)."""
        try:
            return self._prepare(emails)
        except Exception as error:
            # A store did not answer (most likely) while reading the tenants' branding: these
            # attempts end now as temporary failures, retried with the usual backoff, rather
            # than each waiting for its lease to run out. Recording them waits for the store.
            log.warning("cannot prepare the batch; its emails will be retried", error=str(error))
            detail = without_addresses(f"not sent: {type(error).__name__} while preparing; will retry")
            return [NotDelivered(email.id, email.attempts, detail, False) for email in emails]

    def _prepare(self, emails: list[Email]) -> list[_Ready | Outcome]:
        """Each email rendered with its tenant's branding, or why it will not be sent (in a
        thread: the whole batch in one call, rather than one hand-over to a thread per email)."""
        self._templates = {email.id: email.template for email in emails}
        now = self.notifier.clock()
        brandings: dict[str, Any] = {}
        prepared: list[_Ready | Outcome] = []
        for email in emails:
            if email.recipient is None:
                error = "the tenant has no staff notification address: set one, then retry this email"
                prepared.append(NotDelivered(email.id, email.attempts, error, True))
                continue
            if email.recipient.erased:
                prepared.append(Withdrawn(email.id, "the recipient's personal data was erased"))
                continue
            expires_at = email.data.get("expires_at")
            if "sealed_link" in email.data and expires_at is not None and now >= expires_at:
                prepared.append(Withdrawn(email.id, "the link expired before the email could be sent"))
                continue
            if email.tenant_id not in brandings:
                brandings[email.tenant_id] = self.notifier.branding(self.notifier.tenant(email.tenant_id))
            rendered = self._render(email, brandings[email.tenant_id])
            prepared.append(_Ready(email, rendered) if isinstance(rendered, Rendered) else rendered)
        return prepared

    def _render(self, email: Email, branding: Branding) -> Rendered | Outcome:
        """The message as it goes on the wire."""
        try:
            return self.renderer.render(
                kind=email.template,
                language=email.language,
                data=self._open(email.data),
                branding=branding,
                recipient=str(email.recipient),
                message_id=email.message_id,
                date=email.queued_at,
            )
        except Exception as error:  # a bug in a template or bad data: an operator looks
            log.exception("cannot render email", email_id=str(email.id), template=email.template)
            detail = without_addresses(f"cannot render the email: {type(error).__name__}: {error}")
            return NotDelivered(email.id, email.attempts, detail, True)

    def _open(self, data: dict[str, Any]) -> dict[str, Any]:
        opened = {k: str(v) if isinstance(v, Personal) else v for k, v in data.items()}
        if "sealed_link" in opened:
            opened["link"] = unseal(self._key, opened.pop("sealed_link"))
        return opened


def _span(email: Email) -> AbstractContextManager[Any]:
    """The SMTP transaction of an email, in the trace of what queued it (`backbone.tracing`)."""
    if not tracing.enabled():
        return nullcontext()
    return tracing.span(
        "notifier send email",
        email.traceparent,
        SpanKind.CLIENT,
        {"email.id": str(email.id), "email.template": email.template, "email.attempt": email.attempts},
    )


def _raise_if_cancelled() -> None:
    """On Python 3.11, `asyncio.wait_for` (which aiosmtplib uses for every command) swallows a
    cancellation that arrives just as the awaited reply does; the task would then go on
    forever and never let the service stop. Its cancellation request is still recorded."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _label(outcome: Outcome) -> str:
    if isinstance(outcome, Delivered):
        return "sent"
    if isinstance(outcome, Withdrawn):
        return "withdrawn"
    return "refused" if outcome.permanent else "failed"
