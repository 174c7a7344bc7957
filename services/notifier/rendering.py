"""Turning an email into a MIME message: a plain-text and an HTML part, in the customer's
language, with the tenant's branding.

Templates live in `templates/<language>/<kind>.{txt,html}.j2` and extend that language's
`_layout`, which adds the branding (business name, footer, reply-to). The text template's
`subject` block is the subject line. HTML is autoescaped, by the file name: every template
that writes HTML ends in `.html.j2`, its macros included (`_macros.html.j2`; the text ones are
in `_macros.txt.j2`). A link goes into an `href` only through the `url` filter, which takes
http(s) URLs only. Subjects and headers never carry a line break (no header injection). Dates
are shown in the tenant's time zone, amounts and dates in the language's conventions.

Each pair of templates is loaded once per (kind, language); the MIME message around the two
parts is put together here (`_multipart`), several times faster than `email`'s generator.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email import quoprimime
from email.header import Header
from email.utils import format_datetime, formataddr, parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, select_autoescape
from markupsafe import Markup, escape

from contracts.wording import refund_note

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
            auto_reload=False,  # templates are part of the code: no stat() per email
        )
        self._env.filters["nl2br"] = _nl2br
        self._env.filters["url"] = _url
        self._loaded: dict[tuple[str, str], tuple[Template, Template]] = {}

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
            "refund_note": lambda code: refund_note(
                language,
                business_name=branding.business_name,
                contact=branding.reply_to,
                booking_code=code,
                in_email=True,
            ),
        }
        text_template, html_template = self._templates(language, kind)
        subject = _one_line("".join(text_template.blocks["subject"](text_template.new_context(context))))
        text = text_template.render(context)
        html = html_template.render(context)

        # Every header value is one line (no injection). The message is put together here
        # rather than by `email`'s generator, which took two thirds of the time of an email
        # (folding every header, a new regular expression per boundary).
        headers = [
            ("From", formataddr((_one_line(branding.business_name), self.sender_address), "utf-8")),
            ("To", _one_line(recipient)),  # as it is: a non-ASCII address goes with SMTPUTF8
        ]
        if branding.reply_to:
            headers.append(("Reply-To", _one_line(branding.reply_to)))
        headers += [
            ("Subject", subject),
            ("Message-ID", _one_line(message_id)),
            ("Date", format_datetime(date.astimezone(UTC))),
            ("Content-Language", language),
            ("Auto-Submitted", "auto-generated"),  # RFC 3834: no auto-replies to this
        ]
        utf8 = not recipient.isascii()
        return Rendered(subject, _multipart(headers, text, html, message_id), utf8)

    def _templates(self, language: str, kind: str) -> tuple[Template, Template]:
        """The text and HTML templates of a kind of email in a language, loaded once."""
        found = self._loaded.get((language, kind))
        if found is None:
            found = (
                self._env.get_template(f"{language}/{kind}.txt.j2"),
                self._env.get_template(f"{language}/{kind}.html.j2"),
            )
            self._loaded[(language, kind)] = found
        return found


CRLF = "\r\n"


def _multipart(headers: list[tuple[str, str]], text: str, html: str, message_id: str) -> bytes:
    """A multipart/alternative message (RFC 2045/2046) with a quoted-printable text and HTML
    part: 7-bit clean, except for a non-ASCII address (sent with SMTPUTF8). The boundary
    contains "=_", which quoted-printable text never does, so it cannot occur in a part; it
    comes from the Message-ID, so a copy sent again is the same bytes."""
    boundary = "=_" + hashlib.blake2b(message_id.encode(), digest_size=16).hexdigest()
    lines = [_header(name, value) for name, value in headers]
    lines += [
        "MIME-Version: 1.0",
        "Content-Type: multipart/alternative;",
        f' boundary="{boundary}"',
        "",
    ]
    for subtype, body in (("plain", text), ("html", html)):
        lines += [
            f"--{boundary}",
            f'Content-Type: text/{subtype}; charset="utf-8"',
            "Content-Transfer-Encoding: quoted-printable",
            "",
            quoprimime.body_encode(body.encode("utf-8").decode("latin-1"), eol=CRLF),
        ]
    lines += [f"--{boundary}--", ""]
    return CRLF.join(lines).encode("utf-8")


def _header(name: str, value: str) -> str:
    """One header field: non-ASCII text as RFC 2047 encoded words (but the recipient's address,
    which travels with SMTPUTF8), folded (RFC 5322 2.2.3) only when longer than a line should
    be: as `email`'s compat32 policy does."""
    if name == "To" or (value.isascii() and len(name) + len(value) + 2 <= 78):
        return f"{name}: {value}"
    charset = None if value.isascii() else "utf-8"
    return f"{name}: " + Header(value, charset, header_name=name).encode(linesep=CRLF)


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
