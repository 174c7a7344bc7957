"""Decoding of bus messages against an explicit allow-list of contract models.

A consumer never resolves a class from anything the sender wrote: the body's type name and
schema version are looked up in a `Catalog` built from the models this code base knows.
Whatever is not in it is refused with a `DecodeError` whose `reason` says why.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from contracts import accounts, bookings
from contracts.envelope import Message

DecodeReason = Literal[
    "malformed_json",
    "not_an_object",
    "missing_type",
    "unknown_type",
    "unsupported_version",
    "schema_invalid",
]


class DecodeError(Exception):
    """A message that cannot be turned into a contract model. Never retried: dead-lettered."""

    def __init__(self, reason: DecodeReason, detail: str, body: dict[str, Any] | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.body = body  # the parsed JSON, when it got that far (e.g. to find a command_id)


class Catalog:
    """The message models one consumer accepts, by (type name, schema version)."""

    def __init__(self, models: Iterable[type[Message]]):
        self._models: dict[tuple[str, int], type[Message]] = {}
        for model in models:
            key = (model.type_name(), model.version())
            if key in self._models:
                raise ValueError(f"duplicate message model for {key}")
            self._models[key] = model

    def __iter__(self):
        return iter(self._models.values())

    def __contains__(self, model: type[Message]) -> bool:
        return self._models.get((model.type_name(), model.version())) is model

    def decode(self, raw: bytes | None) -> Message:
        try:
            body = _parse(raw or b"")
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DecodeError("malformed_json", str(error)) from None
        if not isinstance(body, dict):
            raise DecodeError("not_an_object", f"the body is a JSON {type(body).__name__}")
        type_name = body.get("event_type", body.get("command_type"))
        version = body.get("schema_version")
        if not isinstance(type_name, str) or not isinstance(version, int):
            raise DecodeError("missing_type", "event_type/command_type and schema_version are required", body)
        model = self._models.get((type_name, version))
        if model is None:
            known = sorted(v for (t, v) in self._models if t == type_name)
            if known:
                raise DecodeError(
                    "unsupported_version",
                    f"{type_name} v{version} is not supported here (known: {known})",
                    body,
                )
            raise DecodeError("unknown_type", f"{type_name!r} is not a message this consumer takes", body)
        try:
            return model.model_validate(body)
        except ValidationError as error:
            raise DecodeError("schema_invalid", _summarise(error), body) from None


def _parse(raw: bytes) -> Any:
    """The JSON of a body: orjson's parse (a sixth of the standard library's CPU on a command),
    and where orjson refuses, the standard library's, so that what was accepted or refused, and
    why, stays as it was (orjson refuses some bodies `json` takes: NaN, lone surrogates,
    UTF-16)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def _summarise(error: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(p) for p in e['loc']) or '<body>'}: {e['msg']}"
        for e in error.errors(include_url=False, include_input=False)
    ]
    return "; ".join(problems[:10]) + (f" (+{len(problems) - 10} more)" if len(problems) > 10 else "")


ALL_EVENTS: tuple[type[Message], ...] = (*accounts.EVENTS, *bookings.EVENTS)
ALL_COMMANDS: tuple[type[Message], ...] = bookings.COMMANDS
