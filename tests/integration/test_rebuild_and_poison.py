"""Derived state comes back from the event log; poison goes to the dead letters and the
partition keeps flowing. Real processes, real broker."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
import sqlalchemy as sa

from tests.support.system import (
    System,
    command_record,
    decode,
    place_booking_command,
    publish,
    read_topic,
    set_tenant_settings,
    signed_command,
    verified_customer,
    wait_for,
)

pytestmark = pytest.mark.integration

TENANT = "rebuild-tours"


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_bookings_rebuilt_from_its_event_log_answer_the_same(
    request, store, tmp_path, kafka_bootstrap_servers, mail_server
):
    postgres = request.getfixturevalue("postgres") if store == "postgres" else None
    system = System(tmp_path, kafka_bootstrap_servers, mail_server.port, store, postgres).start()
    set_tenant_settings(
        system,
        TENANT,
        customer_logins_enabled=True,
        allow_cancel=True,
        cancel_cutoff={"amount": 24, "unit": "hours"},
        blocking_statuses=["PAID"],
    )
    email = f"reb-{uuid.uuid4().hex[:6]}@example.com"
    customer = verified_customer(system, mail_server, TENANT, email)
    commands = [
        place_booking_command(TENANT, email, status=status, paid=paid)
        for status, paid in [("PEND", "0.00"), ("PAID", "105.00"), ("PART", "20.00")]
    ]
    asyncio.run(
        publish(kafka_bootstrap_servers, system.topic("bookings.commands"), map(command_record, commands))
    )

    def listing():
        response = httpx.get(f"{system.bookings.url}/v1/me/bookings", headers=customer)
        return response.json() if response.status_code == 200 else []

    wait_for(lambda: len(listing()) == 3, what="three bookings listed")
    cancelled = httpx.post(
        f"{system.bookings.url}/v1/me/bookings/{commands[0]['booking_id']}/cancellation",
        headers=customer,
        json={"booking_version": 1},
    )
    assert cancelled.status_code == 200
    wait_for(lambda: any(b["status"] == "STOP" for b in listing()), what="the cancellation listed")
    before = listing()
    assert {b["cancel"]["reason_code"] for b in before} == {"already_closed", "status_blocks", None}

    # Stop the service and throw its derived state away: only the event log remains.
    system.bookings.stop()
    if store == "sqlite":
        (tmp_path / "bookings" / "bookings-views.sqlite3").unlink()
    else:
        engine = sa.create_engine(postgres.sqlalchemy_url(f"{system.namespace}_bookings"))
        with engine.begin() as conn:
            for table in (
                "bookings",
                "customer_accounts",
                "tenant_policies",
                "custom_statuses",
                "projection_positions",
            ):
                conn.execute(sa.text(f"DROP TABLE {table}"))
        engine.dispose()
    system.bookings.start().wait_ready()

    wait_for(lambda: listing() == before, timeout=60, what="the same answers after the rebuild")
    system.stop()


def test_poison_is_dead_lettered_with_its_reason_and_the_rest_flows(
    tmp_path, kafka_bootstrap_servers, mail_server
):
    system = System(tmp_path, kafka_bootstrap_servers, mail_server.port).start("bookings", "notifier")
    invalid = place_booking_command(TENANT, "x@example.com") | {"currency": "euro"}
    future = place_booking_command(TENANT, "y@example.com") | {"schema_version": 99}
    good = place_booking_command(TENANT, "z@example.com")
    asyncio.run(
        publish(
            kafka_bootstrap_servers,
            system.topic("bookings.commands"),
            [
                signed_command(good["booking_id"].encode(), b'{"command_type": "Place', "storefront"),
                command_record(invalid),
                command_record(future),
                command_record(good),
            ],
        )
    )
    # A malformed event (signed by its owner) on a topic two services read: both dead-letter
    # it, both keep going.
    broken = b"\x00\x01 not json"
    signed = system.signer("accounts").sign(broken, {})
    asyncio.run(publish(kafka_bootstrap_servers, system.topic("accounts.events"), [(b"k", broken, signed)]))

    def dead(service):
        return asyncio.run(read_topic(kafka_bootstrap_servers, system.topic(f"{service}.dead-letters")))

    def reasons(records):
        return sorted(dict(r.headers)["dlq-reason"].decode() for r in records)

    wait_for(lambda: len(dead("bookings")) == 4, timeout=30, what="four dead letters in bookings")
    assert reasons(dead("bookings")) == [
        "malformed_json",
        "malformed_json",
        "schema_invalid",
        "unsupported_version",
    ]
    wait_for(lambda: len(dead("notifier")) == 1, timeout=30, what="a dead letter in notifier")
    letter = next(r for r in dead("bookings") if dict(r.headers)["dlq-reason"] == b"schema_invalid")
    headers = {k: v.decode() for k, v in letter.headers}
    assert "currency" in headers["dlq-detail"]
    assert headers["dlq-original-topic"] == system.topic("bookings.commands")
    assert json.loads(letter.value) == invalid  # the original bytes, untouched

    # The good command after them was applied; the invalid ones were answered, not dropped.
    def outcomes():
        return {
            o["command_id"]: o
            for o in decode(
                asyncio.run(read_topic(kafka_bootstrap_servers, system.topic("bookings.command-outcomes")))
            )
        }

    wait_for(lambda: len(outcomes()) == 3, what="three outcomes")
    answers = outcomes()
    assert answers[good["command_id"]]["outcome"] == "accepted"
    assert answers[invalid["command_id"]]["reason_code"] == "schema_invalid"
    assert answers[invalid["command_id"]]["final"] is False
    assert answers[future["command_id"]]["reason_code"] == "unsupported_version"
    system.stop()
    for service in ("bookings", "notifier"):
        assert system.services[service].proc.returncode in (0, -15), "the consumer crashed"
