"""The event store's faster JSON (`backbone.codec`) writes exactly the bytes eventsourcing's
`JSONTranscoder` writes, so every store, old or new, reads the same; what it does not write
itself, the library writes (or refuses) as before."""

from __future__ import annotations

import enum
import json
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
from eventsourcing.application import Application
from eventsourcing.persistence import JSONTranscoder, Transcoding
from hypothesis import given, settings
from hypothesis import strategies as st

from backbone.codec import OrjsonTranscoder


class Colour(enum.StrEnum):  # a subclass of str: the library writes it as a string
    RED = "red"


class Point:
    def __init__(self, x: Any, y: Any):
        self.x, self.y = x, y


class PointAsDict(Transcoding):  # its data holds values that need transcoding in turn
    type = Point
    name = "point"

    def encode(self, obj: Point) -> dict[str, Any]:
        return {"x": obj.x, "y": obj.y}

    def decode(self, data: dict[str, Any]) -> Point:
        return Point(data["x"], data["y"])


def transcoders() -> tuple[JSONTranscoder, JSONTranscoder]:
    library, ours = JSONTranscoder(), OrjsonTranscoder()
    for transcoder in (library, ours):
        # The library's own: UUID, Decimal, datetime.
        Application.register_transcodings(None, transcoder)  # type: ignore[arg-type]
        transcoder.register(PointAsDict())
    return library, ours


def outcome(transcoder: JSONTranscoder, state: Any) -> bytes | str:
    try:
        return transcoder.encode(state)
    except Exception as error:  # the same refusal, of the same kind
        return f"refused: {type(error).__name__}"


zones = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), None])
scalars = st.one_of(
    st.text(),  # every code point orjson or the library may escape differently, surrogates too
    st.integers(),  # beyond 64 bits as well
    st.floats(),  # nan and infinities too
    st.booleans(),
    st.none(),
    st.uuids(),
    st.decimals(allow_nan=True),
    st.datetimes(timezones=zones),
    st.dates(),  # no transcoding: refused by both
    st.just(Colour.RED),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
        st.dictionaries(st.integers(), inner, max_size=2),  # keys the library turns into text
        st.builds(Point, inner, inner),
    ),
    max_leaves=20,
)


# What events hold (no floats, no surrogates, integers within 64 bits): written by orjson itself.
texts = st.text(alphabet=st.characters(exclude_categories=("Cs",)))
written_by_orjson = st.recursive(
    st.one_of(
        texts,
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.booleans(),
        st.none(),
        st.uuids(),
        st.decimals(allow_nan=True),
        st.datetimes(timezones=zones),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(texts, inner, max_size=4),
        st.builds(Point, inner, inner),
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=12), values, max_size=6))
def test_writes_the_librarys_bytes_or_refuses_as_it_does(state):
    library, ours = transcoders()
    assert outcome(ours, state) == outcome(library, state)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(texts, written_by_orjson, max_size=6))
def test_what_events_hold_orjson_writes_byte_for_byte(state):
    library, ours = transcoders()
    assert orjson.dumps(ours._tagged(state)) == library.encode(state)  # not the library's fallback


@settings(max_examples=300, deadline=None)
@given(texts)
def test_text_is_escaped_as_the_library_escapes_it(text):
    library, ours = transcoders()
    assert orjson.dumps(ours._tagged({"t": text, "k": [text]})) == library.encode({"t": text, "k": [text]})


def test_what_it_writes_decodes_with_the_librarys_decoder():
    library, ours = transcoders()
    state = {
        "id": uuid.uuid4(),
        "at": datetime.now(UTC),
        "amount": Decimal("30.00"),
        "lines": [{"starts": datetime(2026, 12, 1, 9, tzinfo=UTC), "point": Point(1, Decimal("2.5"))}],
        "note": 'ünïcode \u2028 \x7f \x00 "quoted" \\',
    }
    decoded = library.decode(ours.encode(state))
    assert decoded["id"] == state["id"] and decoded["at"] == state["at"]
    assert decoded["amount"] == Decimal("30.00") and decoded["note"] == state["note"]
    point = decoded["lines"][0]["point"]
    assert isinstance(point, Point) and point.y == Decimal("2.5")


def test_a_circular_state_is_refused_as_the_library_refuses_it():
    library, ours = transcoders()
    state: dict[str, Any] = {}
    state["self"] = state
    assert outcome(ours, state) == outcome(library, state) == "refused: ValueError"


@pytest.mark.parametrize("value", [date(2026, 12, 1), object(), {1: "int key"}, 2**70, 1.5])
def test_what_it_does_not_write_itself_is_the_librarys(value):
    library, ours = transcoders()
    assert outcome(ours, {"v": value}) == outcome(library, {"v": value})


def test_each_value_goes_through_its_transcoding_once():
    # (a transcoding may have effects: sealing personal data records the ciphertext stored)
    _, ours = transcoders()
    calls = []

    class Counted(PointAsDict):
        def encode(self, obj: Point) -> dict[str, Any]:
            calls.append(obj)
            return super().encode(obj)

    ours.register(Counted())
    ours.encode({"a": Point(1, 2), "b": [Point(3, 4)]})
    assert len(calls) == 2
    assert json.loads(ours.encode({"p": Point(uuid.UUID(int=1), None)})) == {
        "p": {
            "_type_": "point",
            "_data_": {"x": {"_type_": "uuid_hex", "_data_": uuid.UUID(int=1).hex}, "y": None},
        }
    }
