"""Structured logs: one JSON object per line (or readable console lines for local runs).

The standard library's loggers (uvicorn, faststream, aiokafka, eventsourcing) go through the
same renderer. Secrets never reach a log: fields named like a secret are dropped, secrets
inside text (`token=...`, `Bearer ...`) redacted and email addresses masked, whatever logger
wrote them, in exception texts and tracebacks too.

Every line carries a `correlation_id` (`backbone.context.correlation_id`): the request's or the
message's, whatever thread logs it (the cause is a context variable, which `asyncio.to_thread`
carries into eventsourcing's worker threads), a follower's batch's, or the process's own.
With tracing on, lines logged inside a span also carry its `trace_id`.
"""

from __future__ import annotations

import functools
import importlib
import logging
import re
import sys
from typing import Any

import structlog
from opentelemetry import trace

from backbone import context, tracing

_SECRET_KEYS = re.compile(r"token|password|secret|link|authorization|cookie", re.I)
_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+)")
# A secret inside free text (an exception's message, a URL): `token=...`, `"password": "..."`,
# `Bearer ...`.
_SECRET_IN_TEXT = re.compile(
    r"""(?i)(token|password|secret|authorization|api_key)(["']?\s*[:=]\s*["']?)[^\s&"',;)}\]]+"""
)
_BEARER = re.compile(r"(?i)\bBearer\s+[A-Za-z0-9._~+/=-]+")
# A word without which neither `_SECRET_IN_TEXT` nor `_BEARER` can match: most text has none
# (nor an "@"), and one search for it is much cheaper than the three substitutions.
_MAYBE_SECRET = re.compile(r"(?i)token|password|secret|authorization|api_key|bearer")


def mask_email(text: str) -> str:
    return _EMAIL.sub(r"\1***@\2", text) if "@" in text else text


def scrub_text(text: str) -> str:
    """Free text as it may be logged: addresses masked, secrets in it redacted."""
    if _MAYBE_SECRET.search(text):
        text = _SECRET_IN_TEXT.sub(r"\1\2[redacted]", _BEARER.sub("Bearer [redacted]", text))
    return mask_email(text)


@functools.lru_cache(maxsize=1024)
def _secret_key(key: str) -> bool:
    return _SECRET_KEYS.search(key) is not None


def _scrub(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    # Every line goes through this twice (structlog's chain, then the formatter's, after the
    # exception's text exists); scrubbing was two thirds of a line's cost before the checks
    # above spared the substitutions where they cannot match.
    for key in list(event_dict):
        if _secret_key(key):
            event_dict[key] = "[redacted]"
        elif isinstance(event_dict[key], str):
            event_dict[key] = scrub_text(event_dict[key])
    return event_dict


def _correlate(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    if event_dict.get("correlation_id") is None:
        event_dict["correlation_id"] = context.correlation_id()
    if tracing.enabled() and "trace_id" not in event_dict:
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            event_dict["trace_id"] = format(span.trace_id, "032x")
    return event_dict


def configure(service: str, level: str = "INFO", fmt: str = "json") -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _correlate,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _scrub,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        # A line below the logger's level is dropped first, not after the whole chain ran
        # (a relay's `debug` per batch cost as much as a line written).
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _scrub,  # again: the exception's text (and traceback) exists only from here on
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # faststream gives its own logger a coloured handler and stops it there (propagate=False):
    # its lines (the brokers' `faststream.<service>` loggers too) would skip the renderer.
    importlib.import_module("faststream")
    faststream = logging.getLogger("faststream")
    faststream.handlers[:] = []
    faststream.propagate = True
    for noisy in ("aiokafka", "kafka", "uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
