"""The bookings service's events are stored in the very bytes eventsourcing's own JSON encoder
writes (`backbone.codec`): stores written before read the same, and the library reads ours. And
its messages go out in the bytes pydantic's `model_dump_json` writes (`backbone.bus.json_bytes`)."""

from __future__ import annotations

from eventsourcing.persistence import JSONTranscoder

from backbone import personal
from backbone.bus import json_bytes
from backbone.codec import OrjsonTranscoder
from backbone.follower import read_log
from services.bookings.integration import translator
from tests.support.bookings import command, pay, place
from tests.unit.bookings.conftest import TENANT


async def test_every_kind_of_event_is_stored_as_the_library_would_store_it(harness, monkeypatch):
    await harness.customer("ada@example.com")  # the accounts service's events it keeps
    placed = place(TENANT, "ada@example.com", form={"pickup": "Hotel Post"})
    booking_id = placed["booking_id"]
    await harness.send(placed, pay(TENANT, booking_id, "30.00"))
    await harness.send(
        command("CancelBooking", TENANT, booking_id, reason="storm", override_customer_rules=True)
    )
    app = harness.app
    assert isinstance(app.mapper.transcoder, OrjsonTranscoder)
    library = JSONTranscoder()
    app.register_transcodings(library)

    stored = app.recorder.select_notifications(start=1, limit=1000)
    kinds = set()
    monkeypatch.setattr(personal.os, "urandom", lambda n: b"\x01" * n)  # the same nonce for both
    for record in stored:
        # What the library reads from the store is what the service reads.
        assert library.decode(record.state) == app.mapper.transcoder.decode(record.state)
        state = dict(vars(app.mapper.to_domain_event(record)))
        del state["originator_id"], state["originator_version"]
        assert app.mapper.transcoder.encode(state) == library.encode(state)
        kinds.add(record.topic)
    assert len(stored) >= 8 and len(kinds) >= 5, kinds


async def test_messages_go_out_in_the_bytes_model_dump_json_writes(harness):
    # `backbone.bus.json_bytes` skips `model_dump_json`'s wrapper, not what it writes.
    await harness.customer("ada@example.com")
    placed = place(TENANT, "ada@example.com", form={"pickup": "Hotel Post"})
    await harness.send(placed, pay(TENANT, placed["booking_id"], "30.00"))
    await harness.send(
        command("CancelBooking", TENANT, placed["booking_id"], reason="storm", override_customer_rules=True)
    )
    translate = translator(harness.app)
    messages = [out.message for recorded in read_log(harness.app, 0, 1000) for out in translate(recorded)]
    messages += harness.app.vault.unpublished()  # subject keys, as their topic carries them
    assert len({type(m) for m in messages}) >= 4
    for message in messages:
        assert json_bytes(message) == message.model_dump_json().encode()
