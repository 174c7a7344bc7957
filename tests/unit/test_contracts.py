"""The contracts: committed schemas match the models, and decoding refuses what it must."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from contracts import schemafiles
from contracts.bookings import PlaceBooking
from contracts.catalog import ALL_COMMANDS, ALL_EVENTS, Catalog, DecodeError


def test_every_committed_schema_matches_its_model():
    assert schemafiles.check() == []


def test_a_changed_model_without_a_new_version_is_caught(monkeypatch):
    original = schemafiles.render

    def changed(model):
        text = original(model)
        return text.replace('"title": "Booking Code"', '"title": "Booking Reference"')

    monkeypatch.setattr(schemafiles, "render", changed)
    problems = schemafiles.check()
    assert any("PlaceBooking v1 no longer matches" in p for p in problems)


def place_booking_body(**overrides):
    body = {
        "command_type": "PlaceBooking",
        "schema_version": 1,
        "command_id": str(uuid.uuid4()),
        "issued_at": datetime.now(UTC).isoformat(),
        "issued_by": "storefront",
        "tenant_id": "acme",
        "correlation_id": str(uuid.uuid4()),
        "booking_id": str(uuid.uuid4()),
        "booking_code": "ABC-123",
        "customer": {"email": "Jo@Example.com", "name": "Jo"},
        "lines": [
            {
                "kind": "product",
                "ref": "p1",
                "name": "Tour",
                "starts_at": "2030-01-01T10:00:00+01:00",
                "ends_at": "2030-01-01T12:00:00+01:00",
                "unit_price": "10.50",
            }
        ],
        "currency": "EUR",
    }
    body.update(overrides)
    return body


catalog = Catalog((*ALL_EVENTS, *ALL_COMMANDS))


def test_a_valid_command_decodes_normalised():
    command = catalog.decode(json.dumps(place_booking_body()).encode())
    assert isinstance(command, PlaceBooking)
    assert command.customer.email == "jo@example.com"
    assert command.lines[0].starts_at.tzinfo == UTC
    assert command.lines[0].starts_at.hour == 9


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "malformed_json"),
        (b"\xff\xfe", "malformed_json"),
        (b"[1, 2]", "not_an_object"),
        (b'{"hello": 1}', "missing_type"),
        (json.dumps({"event_type": "Nope", "schema_version": 1}).encode(), "unknown_type"),
        (json.dumps(place_booking_body(schema_version=7)).encode(), "unsupported_version"),
        (json.dumps(place_booking_body(currency="euro")).encode(), "schema_invalid"),
        (json.dumps(place_booking_body(lines=[])).encode(), "schema_invalid"),
        (json.dumps(place_booking_body(unexpected="field")).encode(), "schema_invalid"),
        (
            json.dumps(place_booking_body(customer={"email": "not-an-email", "name": "x"})).encode(),
            "schema_invalid",
        ),
    ],
)
def test_what_cannot_be_decoded_is_refused_with_a_reason(raw, reason):
    with pytest.raises(DecodeError) as error:
        catalog.decode(raw)
    assert error.value.reason == reason
    assert error.value.detail


def test_a_body_in_utf16_decodes_as_with_the_standard_librarys_json():
    # (orjson, which parses bodies first, refuses it; the standard library's parse takes over)
    command = catalog.decode(json.dumps(place_booking_body()).encode("utf-16"))
    assert isinstance(command, PlaceBooking)


@pytest.mark.parametrize("value", [float("nan"), "\ud800"])
def test_values_orjson_refuses_are_judged_by_the_schema_as_before(value):
    # orjson refuses these (NaN, a lone surrogate); the standard
    # library's JSON takes them, and the schema, not the parse, refuses the field, as before.
    with pytest.raises(DecodeError) as error:
        catalog.decode(json.dumps(place_booking_body(unexpected=value)).encode())
    assert error.value.reason == "schema_invalid"


def test_a_line_must_end_after_it_starts():
    body = place_booking_body()
    body["lines"][0]["ends_at"] = body["lines"][0]["starts_at"]
    with pytest.raises(DecodeError, match="ends_at must be after starts_at"):
        catalog.decode(json.dumps(body).encode())
