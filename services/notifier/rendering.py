"""Turning a queued email into a MIME message: a plain-text and an HTML part from templates.

Templates live in `templates/<kind>.<language>.{txt,html}.j2`; the first line of the text
template carries the subject as a Jinja comment: `{# subject: ... #}`. HTML is autoescaped.
"""

from __future__ import annotations

import re
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

TEMPLATES = Path(__file__).parent / "templates"
_SUBJECT = re.compile(r"^\{#\s*subject:\s*(.+?)\s*#\}")

_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)


def render(
    template: str, language: str, data: dict[str, Any], *, sender: str, recipient: str, message_id: str
) -> EmailMessage:
    language = language if (TEMPLATES / f"{template}.{language}.txt.j2").exists() else "en"
    source = (TEMPLATES / f"{template}.{language}.txt.j2").read_text()
    match = _SUBJECT.match(source)
    subject = _env.from_string(match.group(1)).render(**data) if match else template
    text = _env.get_template(f"{template}.{language}.txt.j2").render(**data).lstrip()
    html = _env.get_template(f"{template}.{language}.html.j2").render(**data)
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject.replace("\r", " ").replace("\n", " ")  # no header injection
    message["Message-ID"] = message_id
    message["Date"] = formatdate(localtime=False)
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message
