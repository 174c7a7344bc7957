"""Turning an email into a MIME message: a plain-text and an HTML part, in the customer's
language, with the tenant's branding.

Templates live in `templates/<language>/<kind>.{txt,html}.j2` and extend that language's
`_layout`, which adds the branding (business name, footer, reply-to). The text template's
`subject` block is the subject line. HTML is autoescaped, by the file name: every template
that writes HTML ends in `.html.j2`, its macros included (`_macros.html.j2`; the text ones are
in `_macros.txt.j2`). A link goes into an `href` only through the `url` filter, which takes
http(s) URLs only. Subjects and headers never carry a line break (no header injection). Dates are shown in the tenant's time zone, amounts and
dates in the language's conventions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email import policy
from email.charset import QP, Charset
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr, parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

TEMPLATES = Path(__file__).parent / "templates"
LANGUAGES = ("en", "de")  # every kind of email exists in each of these

KINDS = (
    "verify_email",
    "invitation",
    "verify_new_email",
    "welcome",
    "magic_link",
    "password_reset",
    "booking_cancelled",
    "booking_cancelled_staff",
    "booking_modified",
    "account_redacted",
)


def supported_language(*candidates: str | None) -> str | None:
    """The first candidate (a BCP 47 tag such as "de" or "de-AT") we have templates for."""
    for candidate in candidates:
        if candidate:
            primary = candidate.split("-", 1)[0].lower()
            if primary in LANGUAGES:
                return primary
    return None


@dataclass(frozen=True)
class Branding:
    """How a tenant's emails look: resolved from its settings and the deployment's defaults."""

    business_name: str
    reply_to: str | None = None
    footer: str | None = None
    timezone: str = "UTC"


@dataclass(frozen=True)
class Rendered:
    subject: str
    raw: bytes  # as it goes on the wire: 7-bit safe, except for a non-ASCII address...
    smtputf8: bool  # ...which needs the server's SMTPUTF8 extension


_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP

_MONTHS = {
    "en": "January February March April May June July August September October November December",
    "de": "Januar Februar März April Mai Juni Juli August September Oktober November Dezember",
}


class Renderer:
    def __init__(self, mail_from: str):
        display_name, address = parseaddr(mail_from)
        self.default_name = display_name or "Bookings"
        self.sender_address = address
        self._env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.filters["nl2br"] = _nl2br
        self._env.filters["url"] = _url

    def render(
        self,
        *,
        kind: str,
        language: str,
        data: dict[str, Any],
        branding: Branding,
        recipient: str,
        message_id: str,
        date: datetime,
    ) -> Rendered:
        language = supported_language(language) or LANGUAGES[0]
        context = {
            **data,
            "language": language,
            "business_name": branding.business_name,
            "footer": branding.footer,
            "reply_to": branding.reply_to,
            "money": lambda amount, currency: _money(amount, currency, language),
            "when": lambda value: _when(value, branding.timezone, language),
        }
        text_template = self._env.get_template(f"{language}/{kind}.txt.j2")
        subject = _one_line("".join(text_template.blocks["subject"](text_template.new_context(context))))
        text = text_template.render(context)
        html = self._env.get_template(f"{language}/{kind}.html.j2").render(context)

        # The classic (compat32) MIME classes: several times faster than EmailMessage, which
        # matters at hundreds of emails a second. Every header value is one line (no injection).
        message = MIMEMultipart("alternative")
        message["From"] = formataddr((_one_line(branding.business_name), self.sender_address), "utf-8")
        message["To"] = _one_line(recipient)
        if branding.reply_to:
            message["Reply-To"] = _one_line(branding.reply_to)
        message["Subject"] = subject if subject.isascii() else Header(subject, "utf-8").encode()
        message["Message-ID"] = _one_line(message_id)
        message["Date"] = format_datetime(date.astimezone(UTC))
        message["Content-Language"] = language
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this
        message.attach(MIMEText(text, "plain", _UTF8_QP))  # quoted-printable: 7-bit safe anywhere
        message.attach(MIMEText(html, "html", _UTF8_QP))
        utf8 = not recipient.isascii()
        raw = message.as_bytes(policy=policy.SMTPUTF8) if utf8 else message.as_bytes()
        return Rendered(subject, raw, utf8)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _nl2br(text: str | None) -> Markup:
    return Markup("<br>\n").join(escape(line) for line in (text or "").splitlines())


class UnsafeLink(ValueError):
    """A link that is not a plain http(s) URL (e.g. `javascript:`): the email is not sent."""


def _url(link: str) -> str:
    """A link for an `href`: http(s) only (autoescaping then keeps it inside its quotes)."""
    parts = urlsplit(str(link))
    if parts.scheme.lower() not in ("https", "http") or not parts.netloc:
        raise UnsafeLink(f"refusing to put a {parts.scheme or 'relative'!s} link in an email")
    return str(link)


def _money(amount: Any, currency: str, language: str) -> str:
    value = f"{Decimal(str(amount)):,.2f}"
    if language == "de":  # 1.234,50
        value = value.replace(",", "_").replace(".", ",").replace("_", ".")
    return f"{value} {currency}"


def _when(value: datetime | str, timezone: str, language: str) -> str:
    instant = datetime.fromisoformat(value) if isinstance(value, str) else value
    try:
        local = instant.astimezone(ZoneInfo(timezone))
    except ZoneInfoNotFoundError:
        local = instant.astimezone(UTC)
    month = _MONTHS[language].split()[local.month - 1]
    zone = local.tzname() or timezone
    if language == "de":
        return f"{local.day}. {month} {local.year}, {local:%H:%M} Uhr ({zone})"
    return f"{local.day} {month} {local.year}, {local:%H:%M} ({zone})"
