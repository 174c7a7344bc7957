"""An SMTP server that keeps every message it receives, plus a small web UI to read them.

Tests:

    mail = MailCatcher(port=0).start()           # free port on 127.0.0.1
    ... send to 127.0.0.1:mail.port ...
    msg = mail.wait_for(lambda m: "alice@example.com" in m.rcpt_tos, timeout=5)
    msg.subject, msg.text, msg.html, msg.links
    mail.fail_recipient("bob@example.com", temporary=True)   # 451 for bob
    mail.stop(); ...; mail.start()                            # "SMTP down for a while"
    MailCatcher(tls=server_ssl_context)                       # STARTTLS offered and required
    MailCatcher(tls=server_ssl_context, implicit_tls=True)    # TLS from the first byte (465)

People running the system locally: ``python -m deploy.local mailcatcher`` (SMTP 1025, web UI
http://127.0.0.1:8025, JSON at /api/messages).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import functools
import html
import itertools
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from deploy.local._proc import LOOPBACK, free_ports, log

URL_RE = re.compile(r"""https?://[^\s<>"')\]]+""")


@dataclass(frozen=True)
class ReceivedMessage:
    """One message as delivered by a client (one per DATA command). It is parsed when first
    read, not as it arrives: parsing took two thirds of the catcher's time per message, which
    a benchmark sending hundreds a second would otherwise measure as part of the sender's."""

    id: int
    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    received_at: datetime
    path: Path | None = None

    @functools.cached_property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def subject(self) -> str:
        return str(self.message.get("Subject", ""))

    @property
    def to(self) -> str:
        """The To: header (the envelope recipients are in ``rcpt_tos``)."""
        return str(self.message.get("To", ""))

    @property
    def sender(self) -> str:
        return str(self.message.get("From", ""))

    def _part(self, subtype: str) -> str | None:
        if not self.message.is_multipart():
            if self.message.get_content_type() == f"text/{subtype}":
                return str(self.message.get_content())
            return None
        body = self.message.get_body(preferencelist=(subtype,))
        return None if body is None else str(body.get_content())

    @property
    def text(self) -> str | None:
        """The text/plain body, if any."""
        return self._part("plain")

    @property
    def html(self) -> str | None:
        """The text/html body, if any."""
        return self._part("html")

    @property
    def links(self) -> list[str]:
        """All http(s) URLs in the text and HTML bodies, in order, without duplicates."""
        found: list[str] = []
        for body in (self.text or "", html.unescape(self.html or "")):
            for url in URL_RE.findall(body):
                if url not in found:
                    found.append(url)
        return found

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "mail_from": self.mail_from,
            "rcpt_tos": list(self.rcpt_tos),
            "from": self.sender,
            "to": self.to,
            "subject": self.subject,
            "received_at": self.received_at.isoformat(),
            "size": len(self.raw),
        }

    def as_json(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "headers": [[k, str(v)] for k, v in self.message.items()],
            "text": self.text,
            "html": self.html,
            "links": self.links,
        }


@dataclass
class _Failure:
    code: int
    message: str


@dataclass
class _State:
    messages: list[ReceivedMessage] = field(default_factory=list)
    failures: dict[str, _Failure] = field(default_factory=dict)  # lower-cased address or "*"


class _Handler:
    """aiosmtpd handler: RCPT applies the failure rules, DATA records the message."""

    def __init__(self, catcher: MailCatcher) -> None:
        self.catcher = catcher

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        failure = self.catcher._failure_for(address)
        if failure is not None:
            return f"{failure.code} {failure.message}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        self.catcher._record(str(envelope.mail_from), tuple(envelope.rcpt_tos), bytes(raw or b""))
        return "250 Message accepted for delivery"


def _accept_any_login(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    return AuthResult(success=True)


class _QuietSession(Session):
    """aiosmtpd itself sets the deprecated ``Session.login_data`` after every successful AUTH,
    which warns; store it without the DeprecationWarning."""

    @property  # type: ignore[override]
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class _SMTP(SMTP):
    def _create_session(self) -> Session:
        return _QuietSession(self.loop)


class _Controller(Controller):
    """aiosmtpd's Controller, but port 0 works (it would try to connect to port 0)."""

    def factory(self) -> SMTP:
        return _SMTP(self.handler, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        if self.port == 0 and self.server is not None and self.server.sockets:
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class MailCatcher:
    """SMTP sink on 127.0.0.1 that records messages in memory (and optionally as .eml files).

    Thread-safe: the SMTP server runs in its own thread; every accessor takes a lock.
    Accepts any AUTH login (plain connection, no TLS), like mailpit's "accept any".
    """

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = LOOPBACK,
        directory: Path | str | None = None,
        hostname: str = "mailcatcher.local",
        tls: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.directory = Path(directory) if directory else None
        self.hostname = hostname
        self.tls = tls  # a server context: STARTTLS required, or (implicit_tls) TLS at once
        self.implicit_tls = implicit_tls
        self._lock = threading.Condition()
        self._state = _State()
        self._ids = itertools.count(1)
        self._controller: _Controller | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> MailCatcher:
        """Start listening. Port 0 picks a free port the first time; later starts (after
        :meth:`stop`) reuse the same port so clients keep their configuration."""
        if self._controller is not None:
            return self
        if self.directory:
            self.directory.mkdir(parents=True, exist_ok=True)
        attempts = 5 if self.port == 0 else 1
        for attempt in range(1, attempts + 1):
            port = self.port or free_ports(1, self.host)[0]
            tls: dict[str, Any] = {}
            if self.tls is not None and self.implicit_tls:
                tls = {"ssl_context": self.tls}
            elif self.tls is not None:
                tls = {"tls_context": self.tls, "require_starttls": True}
            controller = _Controller(
                _Handler(self),
                hostname=self.host,
                port=port,
                server_hostname=self.hostname,
                ident="booking-accounts mailcatcher",
                authenticator=_accept_any_login,
                auth_require_tls=False,
                **tls,
            )
            try:
                controller.start()
            except OSError:
                if attempt == attempts:
                    raise
                continue
            self._controller = controller
            self.port = controller.port
            break
        log.info("mailcatcher.started", smtp=f"{self.host}:{self.port}")
        return self

    def stop(self) -> None:
        """Stop listening (connections are refused) but keep the recorded messages."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()
            log.info("mailcatcher.stopped", smtp=f"{self.host}:{self.port}")

    @property
    def is_running(self) -> bool:
        return self._controller is not None

    def __enter__(self) -> MailCatcher:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ failures

    def fail_recipient(
        self,
        address: str,
        *,
        temporary: bool = False,
        code: int | None = None,
        message: str | None = None,
    ) -> None:
        """Answer RCPT TO:<address> with a permanent 550 (default) or a temporary 451.

        ``address="*"`` applies to every recipient. ``code``/``message`` override the reply.
        """
        if code is None:
            code = 451 if temporary else 550
        if message is None:
            message = (
                "4.3.0 Mailbox temporarily unavailable, try again later"
                if 400 <= code < 500
                else "5.1.1 Mailbox unavailable"
            )
        with self._lock:
            self._state.failures[address.lower()] = _Failure(code, message)

    def fail_all(self, *, temporary: bool = True) -> None:
        """Reject every recipient (451 by default: "the mail server has a problem")."""
        self.fail_recipient("*", temporary=temporary)

    def accept_recipient(self, address: str) -> None:
        with self._lock:
            self._state.failures.pop(address.lower(), None)

    def clear_failures(self) -> None:
        with self._lock:
            self._state.failures.clear()

    def _failure_for(self, address: str) -> _Failure | None:
        with self._lock:
            f = self._state.failures
            return f.get(address.lower()) or f.get("*")

    # ------------------------------------------------------------------ messages

    def _record(self, mail_from: str, rcpt_tos: tuple[str, ...], raw: bytes) -> None:
        received_at = datetime.now(UTC)
        msg_id = next(self._ids)
        path = None
        if self.directory:
            path = self.directory / f"{received_at:%Y%m%dT%H%M%S.%f}-{msg_id:05d}.eml"
            path.write_bytes(raw)
        record = ReceivedMessage(msg_id, mail_from, rcpt_tos, raw, received_at, path)
        with self._lock:
            self._state.messages.append(record)
            self._lock.notify_all()
        log.info(
            "mailcatcher.received",
            id=msg_id,
            mail_from=mail_from,
            rcpt_tos=list(rcpt_tos),
            size=len(raw),
        )

    @property
    def messages(self) -> list[ReceivedMessage]:
        """A snapshot of all messages, oldest first."""
        with self._lock:
            return list(self._state.messages)

    def messages_to(self, address: str) -> list[ReceivedMessage]:
        """Messages whose envelope recipients include ``address`` (case-insensitive)."""
        a = address.lower()
        return [m for m in self.messages if a in (r.lower() for r in m.rcpt_tos)]

    def get(self, msg_id: int) -> ReceivedMessage | None:
        with self._lock:
            return next((m for m in self._state.messages if m.id == msg_id), None)

    def clear(self) -> None:
        """Forget all messages (files already written stay)."""
        with self._lock:
            self._state.messages.clear()

    def wait_for(
        self,
        predicate: Callable[[ReceivedMessage], bool] | None = None,
        timeout: float = 10.0,
    ) -> ReceivedMessage:
        """Block until a message matching ``predicate`` (any message if None) has arrived;
        return the first such message. Raises TimeoutError."""
        pred = predicate or (lambda _m: True)
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for m in self._state.messages:
                    if pred(m):
                        return m
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"no matching message within {timeout}s ({len(self._state.messages)} received)"
                    )
                self._lock.wait(remaining)

    async def wait_for_async(
        self,
        predicate: Callable[[ReceivedMessage], bool] | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109 - same signature as wait_for
    ) -> ReceivedMessage:
        """:meth:`wait_for` for async code: polls without blocking the event loop."""
        pred = predicate or (lambda _m: True)
        deadline = time.monotonic() + timeout
        while True:
            for m in self.messages:
                if pred(m):
                    return m
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no matching message within {timeout}s ({len(self.messages)} received)")
            await asyncio.sleep(0.02)


# ============================================================================ web UI

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{title}</title>{head}
<style>
 body{{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222}}
 header{{background:#263238;color:#fff;padding:.6em 1em}} header a{{color:#fff}}
 main{{padding:1em}} table{{border-collapse:collapse;width:100%}}
 th,td{{text-align:left;padding:.35em .6em;border-bottom:1px solid #ddd;vertical-align:top}}
 tr:hover td{{background:#f5f7f8}} .muted{{color:#777}}
 pre{{white-space:pre-wrap;background:#fafafa;border:1px solid #eee;padding:.8em}}
 iframe{{width:100%;height:60vh;border:1px solid #ccc}}
 dl{{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}} dt{{font-weight:600}}
</style></head>
<body><header><a href="/"><b>Mail catcher</b></a>
 <span class="muted">SMTP {smtp} &middot; <a href="/api/messages">JSON</a></span></header>
<main>{body}</main></body></html>"""


def _linkify(text: str) -> str:
    out: list[str] = []
    pos = 0
    for m in URL_RE.finditer(text):
        out.append(html.escape(text[pos : m.start()]))
        url = html.escape(m.group(0), quote=True)
        out.append(f'<a href="{url}" target="_blank" rel="noopener noreferrer">{url}</a>')
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


def create_app(catcher: MailCatcher) -> Any:
    """FastAPI app: ``/`` (list, newest first), ``/messages/{id}``, ``/messages/{id}/raw``,
    ``/messages/{id}/html`` (the HTML part, for the sandboxed iframe), ``/api/messages``
    (JSON, newest first; ``?to=addr`` filters), ``/api/messages/{id}``, ``DELETE
    /api/messages``."""
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    app = FastAPI(title="booking-accounts mail catcher", docs_url="/docs", redoc_url=None)
    smtp = f"{catcher.host}:{catcher.port}"

    def page(title: str, body: str, head: str = "") -> HTMLResponse:
        return HTMLResponse(_PAGE.format(title=html.escape(title), head=head, body=body, smtp=smtp))

    def find(msg_id: int) -> ReceivedMessage:
        m = catcher.get(msg_id)
        if m is None:
            raise HTTPException(status_code=404, detail="no such message")
        return m

    @app.get("/", response_class=HTMLResponse, response_model=None)
    def index() -> HTMLResponse:
        msgs = list(reversed(catcher.messages))
        rows = "".join(
            f"<tr><td><a href='/messages/{m.id}'>{html.escape(m.subject) or '(no subject)'}</a>"
            f"</td><td>{html.escape(m.to or ', '.join(m.rcpt_tos))}</td>"
            f"<td>{html.escape(m.sender)}</td>"
            f"<td class='muted'>{m.received_at:%Y-%m-%d %H:%M:%S} UTC</td></tr>"
            for m in msgs
        )
        body = (
            f"<p>{len(msgs)} message(s), newest first. This page refreshes every 5 s.</p>"
            "<table><tr><th>Subject</th><th>To</th><th>From</th><th>Received</th></tr>"
            f"{rows}</table>"
        )
        return page("Mail catcher", body, head='<meta http-equiv="refresh" content="5">')

    @app.get("/messages/{msg_id}", response_class=HTMLResponse, response_model=None)
    def show(msg_id: int) -> HTMLResponse:
        m = find(msg_id)
        meta = "".join(
            f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>"
            for k, v in (
                ("Subject", m.subject),
                ("From", m.sender),
                ("To", m.to),
                ("Envelope from", m.mail_from),
                ("Envelope to", ", ".join(m.rcpt_tos)),
                ("Received", f"{m.received_at:%Y-%m-%d %H:%M:%S} UTC"),
            )
        )
        parts = [f"<dl>{meta}</dl>", f"<p><a href='/messages/{m.id}/raw'>raw .eml</a></p>"]
        if m.html is not None:
            # No allow-scripts / allow-same-origin: the mail cannot run code or read this
            # origin. Links open in a new tab (the HTML gets <base target="_blank">).
            parts.append(
                "<h3>HTML part</h3><iframe sandbox='allow-popups "
                f"allow-popups-to-escape-sandbox' src='/messages/{m.id}/html'></iframe>"
            )
        if m.text is not None:
            parts.append(f"<h3>Text part</h3><pre>{_linkify(m.text)}</pre>")
        if m.links:
            items = "".join(
                f"<li><a href='{html.escape(u, quote=True)}' target='_blank' "
                f"rel='noopener noreferrer'>{html.escape(u)}</a></li>"
                for u in m.links
            )
            parts.append(f"<h3>Links</h3><ul>{items}</ul>")
        return page(m.subject or "(no subject)", "".join(parts))

    @app.get("/messages/{msg_id}/html", response_class=HTMLResponse, response_model=None)
    def show_html(msg_id: int) -> HTMLResponse:
        m = find(msg_id)
        if m.html is None:
            raise HTTPException(status_code=404, detail="message has no HTML part")
        return HTMLResponse(
            '<base target="_blank">' + m.html,
            headers={"Content-Security-Policy": "script-src 'none'; object-src 'none'"},
        )

    @app.get("/messages/{msg_id}/raw", response_model=None)
    def raw(msg_id: int) -> Response:
        m = find(msg_id)
        return Response(m.raw, media_type="message/rfc822")

    @app.get("/api/messages", response_model=None)
    def api_list(to: str | None = None) -> JSONResponse:
        msgs = catcher.messages_to(to) if to else catcher.messages
        return JSONResponse([m.as_json() for m in reversed(msgs)])

    @app.get("/api/messages/{msg_id}", response_model=None)
    def api_get(msg_id: int) -> JSONResponse:
        return JSONResponse(find(msg_id).as_json())

    @app.delete("/api/messages", response_model=None)
    def api_clear() -> Response:
        catcher.clear()
        return Response(status_code=204)

    return app


class MailCatcherUI:
    """Runs :func:`create_app` with uvicorn in a background thread."""

    def __init__(self, catcher: MailCatcher, port: int = 8025, host: str = LOOPBACK) -> None:
        self.catcher = catcher
        self.host = host
        self.port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10) -> MailCatcherUI:
        import uvicorn

        if self.port == 0:
            self.port = free_ports(1, self.host)[0]
        config = uvicorn.Config(create_app(self.catcher), host=self.host, port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="mailcatcher-ui", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"mail catcher UI could not start on {self.url}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"mail catcher UI did not start on {self.url}")
            time.sleep(0.02)
        log.info("mailcatcher.ui_started", url=self.url)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None
