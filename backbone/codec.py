"""The event store's JSON encoder: the bytes eventsourcing's `JSONTranscoder` writes, made faster.

eventsourcing encodes each event's state with the standard library's JSON encoder and calls
back into Python for every value it cannot write itself (a UUID, a datetime, a Decimal, a
`Personal`): a callback per value, and each callback's result encoded in turn. On the command
path that was a tenth of the inbox's CPU, the sealing of personal values included (issue 10).

`OrjsonTranscoder` writes the same bytes with orjson: one pass in Python turns the registered
types into the library's `{"_type_": name, "_data_": ...}` form (orjson would write a UUID or a
datetime its own way), and orjson writes the result. The stored format does not change: the
library's decoder reads it, stores written before read the same, and any state this pass is not
sure to write byte for byte as the library does (a float, an integer beyond 64 bits, a subclass
of a JSON type, a key that is not a string, a type without a transcoding, text orjson refuses)
is encoded by the library itself, errors included. `tests/unit/test_codec.py` checks the bytes
against the library's on generated states.

Decoding stays the library's: saved events are handed to the relay and the projections from
memory (`ServiceApplication.recorded_event`), so a command's path decodes little.
"""

from __future__ import annotations

from typing import Any

import orjson
from eventsourcing.persistence import JSONTranscoder

__all__ = ["OrjsonTranscoder"]

_JSON_TYPES = (str, int, float, bool, dict, list, tuple)
_INT_RANGE = range(-(1 << 63), 1 << 64)  # what orjson writes as integers


class _LibrarysJob(Exception):
    """Something in the state this encoder leaves to the library's."""


class OrjsonTranscoder(JSONTranscoder):
    def encode(self, obj: Any) -> bytes:
        try:
            return orjson.dumps(self._tagged(obj))
        except (_LibrarysJob, orjson.JSONEncodeError, RecursionError):
            return super().encode(obj)

    def _tagged(self, value: Any) -> Any:
        """`value` with the registered types in the library's tagged form, as its encoder's
        `default` callback would have them written; `_LibrarysJob` for anything else it does not
        write itself the way the library would."""
        kind = type(value)
        if kind is str or value is None or kind is bool:
            return value
        if kind is int:
            if value in _INT_RANGE:
                return value
            raise _LibrarysJob
        if kind is dict:
            tagged = {}
            for key, item in value.items():
                if type(key) is not str:
                    raise _LibrarysJob
                tagged[key] = self._tagged(item)
            return tagged
        if kind is list or kind is tuple:
            return [self._tagged(item) for item in value]
        transcoding = self.types.get(kind)
        # (the library's encoder writes subclasses of JSON types itself, never calling back)
        if transcoding is None or isinstance(value, _JSON_TYPES):
            raise _LibrarysJob
        return {"_type_": transcoding.name, "_data_": self._tagged(transcoding.encode(value))}
