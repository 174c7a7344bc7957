"""The operator and audit tool on a live system: three services as OS processes, a real Kafka
broker, a real SMTP server, the CLI as an operator runs it (a process with a config file)."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest

from backbone import context
from ops import registry
from ops.config import Deployment
from services.accounts.bootstrap import bootstrap as bootstrap_accounts
from services.accounts.tenants import TenantSettings
from tests.support.ops import Ops
from tests.support.system import (
    TEST_PUBLISHERS,
    System,
    all_events,
    command_record,
    decode,
    open_store,
    place_booking_command,
    publish,
    read_topic,
    set_tenant_settings,
    verified_customer,
    wait_for,
)

pytestmark = pytest.mark.integration

TENANT = "ops-tours"
AUDIT_TOKEN = "audit-token-for-tests-at-least-32-characters"


@pytest.fixture
def stopped_system(tmp_path, kafka_bootstrap_servers, mail_server):
    """The three services with the audit API on, not started yet."""
    audit = {"AUDIT_API_TOKEN": AUDIT_TOKEN}
    overrides = {name: audit for name in ("accounts", "bookings", "notifier")}
    system = System(tmp_path, kafka_bootstrap_servers, mail_server.port, overrides=overrides)
    yield system
    system.stop()
    for service in system.services.values():
        assert service.errors() == [], f"{service.name} logged errors"


@pytest.fixture
def system(stopped_system):
    return stopped_system.start()


def caught_up(statuses) -> bool:
    return all(f["lag"] == 0 for s in statuses for f in s["followers"]) and all(
        c["lag"] == 0 for s in statuses for c in s["consumers"]
    )


def test_an_operator_rebuilds_replays_and_audits_a_live_system(
    system, tmp_path, mail_server, kafka_bootstrap_servers
):
    ops = Ops(system, tmp_path)
    set_tenant_settings(system, TENANT, customer_logins_enabled=True, allow_cancel=True)
    email = f"ops-{uuid.uuid4().hex[:6]}@example.com"
    customer = verified_customer(system, mail_server, TENANT, email)

    def place(*commands):
        asyncio.run(
            publish(kafka_bootstrap_servers, system.topic("bookings.commands"), map(command_record, commands))
        )

    def listing():
        response = httpx.get(f"{system.bookings.url}/v1/me/bookings", headers=customer, timeout=10)
        return response.json() if response.status_code == 200 else []

    commands = [place_booking_command(TENANT, email, paid="10.00") for _ in range(3)]
    place(*commands)
    wait_for(lambda: len(listing()) == 3, what="three bookings listed")
    booking_id = commands[0]["booking_id"]
    quote = httpx.get(
        f"{system.bookings.url}/v1/me/bookings/{booking_id}/cancellation-quote", headers=customer
    )
    confirm = quote.json()["confirm"]
    cancelled = httpx.post(
        f"{system.bookings.url}{confirm['href']}",
        headers=customer,
        json={**confirm["body"], "reason": "rain"},
    )
    assert cancelled.status_code == 200, cancelled.text
    mail_server.wait_for(lambda m: email in m.rcpt_tos and "cancelled" in m.subject, timeout=30)

    # Status: every relay, projection and consumer catches up, nothing dead-lettered.
    statuses = wait_for(
        lambda: (s := ops.json("status")) and caught_up(s) and s, timeout=60, what="caught up"
    )
    by_service = {s["service"]: s for s in statuses}
    assert by_service["bookings"]["events"] > 0 and by_service["bookings"]["dead_letters"][0]["size"] == 0
    assert {c["kind"] for c in by_service["notifier"]["consumers"]} == {"inbox", "subject keys"}

    assert "bookings.views" in ops.run("status").stdout.decode()  # the tables for humans

    # Dry runs say what would happen and change nothing.
    [plan] = ops.json("rebuild", "bookings", "--dry-run")
    assert plan["resumed_from"] is None and "would apply events 1.." in plan["notes"][0]
    resend = ops.json("republish", "bookings", "--dry-run")
    assert (
        resend["dry_run"] and resend["messages"][system.topic("bookings.events")] == 4
    )  # 3 placed, 1 cancelled
    assert ops.json("status", "bookings")[0]["events"] == by_service["bookings"]["events"]

    # Rebuild while serving: build the shadow, let more happen, resume it and switch it in.
    [prepared] = ops.json("rebuild", "bookings", "--prepare-only")
    assert not prepared["switched"] and prepared["applied"] == prepared["head"] > 0
    place(place_booking_command(TENANT, email))
    wait_for(lambda: len(listing()) == 4, what="a fourth booking")
    before = listing()
    [switched] = ops.json("rebuild", "bookings")
    assert switched["switched"] and switched["resumed_from"] == prepared["head"]
    assert switched["applied"] > 0  # what happened since the shadow was built
    assert listing() == before
    place(place_booking_command(TENANT, email))  # the service's projection carries on
    wait_for(lambda: len(listing()) == 5, what="a booking placed after the switch")

    # Replay everything from offset 0: already applied, so nothing happens twice.
    statuses = wait_for(
        lambda: (s := ops.json("status")) and caught_up(s) and s, timeout=60, what="caught up"
    )
    events_before = {s["service"]: s["events"] for s in statuses}
    sent_before = len(mail_server.messages)
    for service in ("bookings", "notifier"):
        for report in ops.json("replay", service, "--from-offset", "0"):
            assert report["applied"] == 0 and report["dead_lettered"] == 0, report
            if report["kind"] == "inbox":
                assert report["read"] > 0 and report["redelivered"] == report["read"], report
    after = {s["service"]: s["events"] for s in ops.json("status")}
    assert after == events_before
    assert len(mail_server.messages) == sent_before

    # Audit over HTTP: the full history of the cancelled booking, who did what.
    audit = httpx.Client(base_url=system.bookings.url, timeout=10)
    assert audit.get(f"/v1/audit/aggregates/{booking_id}/events").status_code == 401
    bearer = {"Authorization": f"Bearer {AUDIT_TOKEN}"}
    history = audit.get(f"/v1/audit/aggregates/{booking_id}/events", headers=bearer).json()["events"]
    assert [e["event_type"] for e in history] == ["Booking.Placed", "Booking.Cancelled"]
    assert history[0]["actor"] == "service:storefront" and history[1]["actor"].startswith("customer:")
    assert history[0]["correlation_id"] == commands[0]["correlation_id"]
    assert history[0]["causation_id"] == commands[0]["command_id"]
    assert history[0]["data"]["customer"]["email"] == {"subject_id": booking_id, "sealed": True}
    assert email not in json.dumps(history)
    page = audit.get("/v1/audit/events", params={"limit": 2}, headers=bearer).json()
    assert [e["position"] for e in page["events"]] == [1, 2] and page["next_after"] == 2
    assert (
        audit.get("/v1/audit/aggregates/" + str(uuid.uuid4()) + "/events", headers=bearer).status_code == 404
    )

    # The same history from the CLI, and a tamper-evident export that verifies.
    cli_history = ops.json("history", booking_id)
    assert [(e["service"], e["event_type"]) for e in cli_history] == [
        ("bookings", "Booking.Placed"),
        ("bookings", "Booking.Cancelled"),
    ]
    exported = audit.get("/v1/audit/export", headers=bearer)
    assert exported.status_code == 200
    export_file = tmp_path / "bookings.jsonl"
    export_file.write_text(exported.text)
    assert ops.json("verify", str(export_file))["ok"] is True
    lines = exported.text.splitlines(keepends=True)
    forged = json.loads(lines[3]) | {"actor": "staff:mallory"}
    lines[3] = json.dumps(forged) + "\n"
    export_file.write_text("".join(lines))
    broken = json.loads(ops.run("verify", str(export_file), "--json", check=False).stdout)
    assert (
        broken["ok"] is False
        and broken["problem"] == "altered"
        and broken["line"] == 4
        and broken["seq"] == 3
    )


def test_dead_letters_are_listed_retried_when_fixed_and_discarded_on_record(
    system, tmp_path, kafka_bootstrap_servers
):
    ops = Ops(system, tmp_path)
    invalid = place_booking_command(TENANT, "fix-me@example.com") | {"currency": "euro"}
    hopeless = place_booking_command(TENANT, "never@example.com") | {"schema_version": 99}
    asyncio.run(
        publish(
            kafka_bootstrap_servers,
            system.topic("bookings.commands"),
            [command_record(invalid), command_record(hopeless)],
        )
    )
    letters = wait_for(
        lambda: len(ops.json("dlq", "list", "bookings")) == 2 and ops.json("dlq", "list", "bookings"),
        what="two dead letters",
    )
    by_reason = {x["reason"]: x for x in letters}
    fix, drop = by_reason["schema_invalid"], by_reason["unsupported_version"]
    assert fix["status"] == "open" and "currency" in fix["detail"]

    # Retrying it unchanged is refused: the consumer would refuse it again.
    refused = ops.run("dlq", "retry", "bookings", fix["id"], check=False)
    assert refused.returncode == 1 and b"schema_invalid" in refused.stderr
    fixed = json.dumps(invalid | {"currency": "EUR"}).encode()
    dry = json.loads(
        ops.run(
            "dlq", "retry", "bookings", fix["id"], "--body-file", "-", "--dry-run", "--json", input=fixed
        ).stdout
    )
    assert dry["dry_run"] and ops.json("dlq", "show", "bookings", fix["id"])["status"] == "open"
    done = json.loads(
        ops.run(
            "dlq",
            "retry",
            "bookings",
            fix["id"],
            "--body-file",
            "-",
            "--note",
            "currency typo",
            "--json",
            input=fixed,
        ).stdout
    )
    assert (
        done["action"] == "retried"
        and done["fixed"]
        and done["republished_as"].startswith(system.topic("bookings.commands"))
    )

    def outcome():
        found = decode(
            asyncio.run(read_topic(kafka_bootstrap_servers, system.topic("bookings.command-outcomes")))
        )
        return [o for o in found if o["command_id"] == invalid["command_id"] and o["outcome"] == "accepted"]

    wait_for(outcome, what="the fixed command accepted")

    ops.run("dlq", "discard", "bookings", drop["id"], "--reason", "sender is on v1 now")
    shown = {x["id"]: x for x in ops.json("dlq", "list", "bookings")}
    assert shown[fix["id"]]["status"] == "retried" and shown[drop["id"]]["status"] == "discarded"
    [retried] = shown[fix["id"]]["actions"]
    assert retried["by"] == "staff:test-operator" and retried["note"] == "currency typo" and retried["at"]
    assert shown[drop["id"]]["actions"][0]["reason"] == "sender is on v1 now"
    assert ops.run("dlq", "retry", "bookings", drop["id"], check=False).returncode == 1
    assert ops.json("dlq", "list", "bookings", "--open") == []


def test_republishing_ten_thousand_events_changes_nothing_downstream(stopped_system, tmp_path):
    """10,000 events of accounts go out, bookings turns them into 10,000 events of its own;
    the operator republishes all 10,000: same ids, same upstream positions, so the consumers
    read every copy and apply none."""
    system = stopped_system  # the history is written first, through the service's own save path
    deployment = Deployment(services={n: s.env for n, s in system.services.items()})
    # Built by the service's own bootstrap, which creates its store (the tool never does).
    settings = deployment.settings("accounts", registry.settings_class("accounts"))
    accounts = registry.ServiceHandle("accounts", bootstrap_accounts(settings))
    try:
        for first in range(0, 1000, 100):
            batch = []
            for n in range(first, first + 100):
                with context.caused_by("staff:load-test", f"tenant-{n}"):
                    settings = TenantSettings(tenant_id=f"tenant-{n}")  # 1 event
                    for change in range(9):  # + 9
                        settings.change({"allow_cancel": change % 2 == 0})
                batch.append(settings)
            accounts.app.save(*batch)
        assert accounts.app.recorder.max_notification_id() == 10_000
    finally:
        accounts.close()
    system.start()
    ops = Ops(system, tmp_path)

    def settled(expected_end: int):
        statuses = ops.json("status")
        ends = sum(
            p["end"]
            for s in statuses
            if s["service"] == "bookings"
            for c in s["consumers"]
            for p in c["partitions"]
            if p["topic"] == system.topic("accounts.events")
        )
        return caught_up(statuses) and ends >= expected_end and {s["service"]: s["events"] for s in statuses}

    before = wait_for(lambda: settled(10_000), timeout=240, interval=2, what="bookings applied all 10,000")
    # One adoption per settings event (and the test publishers' registrations, System.start);
    # and each inbox records the life of every partition it consumes (backbone/topiclife.py):
    # accounts reads bookings.events, bookings reads accounts.events and bookings.commands.
    partitions = int(system.services["accounts"].env.get("TOPIC_PARTITIONS", "3"))
    assert before["accounts"] == 10_000 + partitions
    assert before["bookings"] == 10_000 + len(TEST_PUBLISHERS) + 2 * partitions

    report = ops.json("republish", "accounts", "--from", "1", "--to", "10000")
    assert report["events"] == 10_000 and report["messages"] == {system.topic("accounts.events"): 10_000}

    after = wait_for(lambda: settled(20_000), timeout=240, interval=2, what="the copies consumed")
    assert after == before  # bookings and notifier read 10,000 copies and recorded nothing
    bookings = open_store(system, "bookings")
    try:
        policies = [e for e in all_events(bookings) if type(e).__qualname__.startswith("TenantPolicy.")]
    finally:
        bookings.close()
    assert len(policies) == 10_000
