"""Delivering queued emails over SMTP, each exactly once as far as SMTP allows.

For every due email: record the attempt (durable), run the SMTP transaction, record the result
(durable). What remains is the protocol's own window: if the process dies after the server
accepted the message (its 250 reply to the end of DATA) and before the "sent" record commits,
the email is found "interrupted" at restart and sent again, with the same Message-ID, so that
the receiving side can recognise the copy. Nothing else can produce a second copy: a replayed
or redelivered event finds its email already queued (see `handlers.queue`).

A 5xx reply (permanent) parks the email at once; a 4xx reply or a connection problem is
retried with exponential backoff (see `domainmodel.retry_delay`), so an SMTP server that is
down for minutes loses nothing.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import aiosmtplib

from backbone.credentials import unseal
from backbone.follower import Wakeup
from backbone.http import run_sync
from backbone.logging import get_logger
from backbone.personal import Personal
from backbone.readmodel import ReadModel
from services.notifier import views
from services.notifier.application import Notifier
from services.notifier.domainmodel import Email
from services.notifier.rendering import render
from services.notifier.settings import NotifierSettings

log = get_logger(__name__)


class Sender:
    name = "notifier.sender"

    def __init__(
        self,
        notifier: Notifier,
        read_model: ReadModel,
        settings: NotifierSettings,
        sealing_private_key: bytes,
    ):
        self.notifier = notifier
        self.read_model = read_model
        self.settings = settings
        self._key = sealing_private_key
        self._wakeup = Wakeup(notifier)

    async def run(self) -> None:
        self._wakeup.bind()
        while True:
            try:
                due = await run_sync(self._due)
                if due:
                    await self._send_all(due)
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sender cycle failed; retrying shortly")
            await self._wakeup.sleep(1.0)

    def _due(self) -> list[Any]:
        with self.read_model.engine.connect() as conn:
            return views.due(conn, self.notifier.clock(), self.settings.send_batch_size)

    async def _send_all(self, due: list[Any]) -> None:
        smtp: aiosmtplib.SMTP | None = None
        try:
            for email_id in due:
                email = await run_sync(self.notifier.start_attempt, email_id)
                if email is None:
                    continue
                if smtp is None or not smtp.is_connected:
                    smtp = await self._connect(email)
                    if smtp is None:
                        continue
                await self._send_one(smtp, email)
        finally:
            if smtp is not None and smtp.is_connected:
                try:
                    await smtp.quit()
                except aiosmtplib.SMTPException:
                    smtp.close()

    async def _connect(self, email: Email) -> aiosmtplib.SMTP | None:
        s = self.settings
        smtp = aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            timeout=s.smtp_timeout_seconds,
            use_tls=s.smtp_tls == "tls",
            start_tls=s.smtp_tls == "starttls",
            tls_context=ssl.create_default_context() if s.smtp_tls != "none" else None,
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
        )
        try:
            await smtp.connect()
            return smtp
        except (aiosmtplib.SMTPException, OSError) as error:
            await run_sync(
                self.notifier.record_failure,
                email.id,
                email.attempts,
                f"cannot connect to the SMTP server: {error}",
                False,
            )
            return None

    async def _send_one(self, smtp: aiosmtplib.SMTP, email: Email) -> None:
        if email.recipient.erased:  # the customer was erased before we could write to them
            await self._failed(email, "the recipient's personal data was erased", True)
            return
        message = render(
            email.template,
            email.language,
            self._open(email.data),
            sender=self.settings.mail_from,
            recipient=str(email.recipient),
            message_id=email.message_id,
        )
        try:
            _, reply = await smtp.send_message(message)
        except aiosmtplib.SMTPRecipientsRefused as error:
            permanent = all(r.code >= 500 for r in error.recipients)
            await self._failed(email, f"recipient refused: {error}", permanent)
        except aiosmtplib.SMTPResponseException as error:
            await self._failed(email, f"{error.code} {error.message}", error.code >= 500)
        except (aiosmtplib.SMTPException, OSError) as error:
            await self._failed(email, f"SMTP transaction failed: {error}", False)
            smtp.close()
        else:
            await run_sync(self.notifier.record_sent, email.id, email.attempts, reply)

    async def _failed(self, email: Email, error: str, permanent: bool) -> None:
        log.warning("email not delivered", email_id=str(email.id), error=error, permanent=permanent)
        await run_sync(self.notifier.record_failure, email.id, email.attempts, error, permanent)

    def _open(self, data: dict[str, Any]) -> dict[str, Any]:
        opened = {k: str(v) if isinstance(v, Personal) else v for k, v in data.items()}
        if "sealed_link" in opened:
            opened["link"] = unseal(self._key, opened.pop("sealed_link"))
        return opened
