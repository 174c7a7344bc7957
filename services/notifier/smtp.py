"""One SMTP connection, and what each of the server's answers means for an email.

A 5xx reply is permanent (the email is parked at once); a 4xx reply, a timeout or a lost
connection is temporary (retried later). Server replies often echo the recipient's address:
every address is masked before a reply is kept, because replies are stored in the event
store, where personal data is only ever sealed.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass

import aiosmtplib

from services.notifier.settings import NotifierSettings

_ADDRESS = re.compile(r"[^\s<>()\[\]:;,\"']+@[^\s<>()\[\]:;,\"']+")


def without_addresses(text: str, limit: int = 500) -> str:
    """A server reply or error fit to store: addresses masked, bounded in length."""
    return _ADDRESS.sub("<address>", text)[:limit]


@dataclass(frozen=True)
class Answer:
    """What became of one SMTP transaction."""

    accepted: bool
    reply: str  # the server's reply (or the error), addresses masked
    permanent: bool = False  # for a refusal: retrying will not help

    @classmethod
    def refused(cls, reply: str, permanent: bool) -> Answer:
        return cls(False, without_addresses(reply), permanent)


class ConnectFailed(Exception):
    """The server cannot be reached or refused us (TLS, login): every email waits."""


class Mailer:
    """Opens connections to the configured server: TLS as configured, login if configured."""

    def __init__(self, settings: NotifierSettings):
        self.settings = settings
        self._tls = _tls_context(settings)

    async def connect(self) -> aiosmtplib.SMTP:
        s = self.settings
        smtp = aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            timeout=s.smtp_timeout_seconds,
            use_tls=s.smtp_tls_mode == "tls",
            start_tls=s.smtp_tls_mode == "starttls",
            tls_context=self._tls,
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
        )
        try:
            await smtp.connect()
        except (aiosmtplib.SMTPException, OSError) as error:
            smtp.close()
            detail = without_addresses(str(error))
            raise ConnectFailed(f"cannot connect to the SMTP server: {detail}") from None
        return smtp

    async def send(
        self, smtp: aiosmtplib.SMTP, sender: str, recipient: str, raw: bytes, utf8: bool = False
    ) -> Answer:
        """Run one mail transaction for a message already rendered to bytes. A connection
        problem closes `smtp` (the caller opens a new one for the next email).

        SMTP_TIMEOUT_SECONDS bounds the whole transaction, with one timer, rather than each of
        its four commands with one of its own (aiosmtplib's `wait_for` per reply cost more
        than the rest of the client). An ASCII message goes as MAIL, RCPT and DATA, without
        `sendmail`'s checks and size computation, which read each address and the message
        once more."""
        try:
            async with asyncio.timeout(self.settings.smtp_timeout_seconds):
                if utf8:  # (sendmail checks that the server offers SMTPUTF8)
                    _, reply = await smtp.sendmail(
                        sender, [recipient], raw, mail_options=["SMTPUTF8"], timeout=None
                    )
                else:
                    await smtp.mail(sender, timeout=None)
                    await smtp.rcpt(recipient, timeout=None)
                    reply = (await smtp.data(raw, timeout=None)).message
        except aiosmtplib.SMTPRecipientsRefused as error:
            codes = [r.code for r in error.recipients]
            replies = "; ".join(f"{r.code} {r.message}" for r in error.recipients)
            return Answer.refused(f"recipient refused: {replies}", all(code >= 500 for code in codes))
        except aiosmtplib.SMTPRecipientRefused as error:
            await _reset(smtp)
            return Answer.refused(f"recipient refused: {error.code} {error.message}", error.code >= 500)
        except aiosmtplib.SMTPResponseException as error:
            if not utf8:  # (sendmail did)
                await _reset(smtp)
            return Answer.refused(f"{error.code} {error.message}", error.code >= 500)
        except TimeoutError:  # where the server stopped answering is unknown: a new connection
            smtp.close()
            return Answer.refused("SMTP transaction failed: timed out waiting for the server", False)
        except (aiosmtplib.SMTPException, OSError) as error:
            smtp.close()
            return Answer.refused(f"SMTP transaction failed: {error}", False)
        except ValueError as error:  # an address aiosmtplib cannot put on the wire
            return Answer.refused(f"cannot send to this address: {error}", True)
        return Answer(True, without_addresses(reply))

    @staticmethod
    async def still_open(smtp: aiosmtplib.SMTP) -> bool:
        """Whether a connection kept from an earlier batch still works (servers close idle
        ones): a NOOP, so that no email's attempt is spent finding out."""
        if not smtp.is_connected:
            return False
        try:
            await smtp.noop()
            return True
        except (aiosmtplib.SMTPException, OSError):
            smtp.close()
            return False

    @staticmethod
    async def close(smtp: aiosmtplib.SMTP | None) -> None:
        if smtp is None or not smtp.is_connected:
            return
        try:
            await smtp.quit()
        except (aiosmtplib.SMTPException, OSError):
            smtp.close()


async def _reset(smtp: aiosmtplib.SMTP) -> None:
    """End a refused mail transaction (RSET), so that the connection can carry the next one;
    a connection that cannot is closed."""
    try:
        await smtp.rset()
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()


def _tls_context(settings: NotifierSettings) -> ssl.SSLContext | None:
    if settings.smtp_tls_mode == "none":
        return None
    # Certificates and host names are always verified; a private CA is given as a file.
    cafile = str(settings.smtp_ca_file) if settings.smtp_ca_file else None
    return ssl.create_default_context(cafile=cafile)
