"""Redaction is erasure, proven on a real broker with the accounts service as an OS process:
after it, the customer's email and name are in no file of the service's stores (events, read
models, keys; and its log) and in no topic; their key is gone from the vault and, after
compaction, from the keys topic; and neither a rebuild of the read model nor a replay of the
topic brings anything back."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid

import httpx
import pytest

from backbone.personal import Vault
from contracts.personal import SubjectKey
from tests.support.system import (
    System,
    decode,
    open_store,
    opened_key,
    read_topic,
    set_tenant_settings,
    staff_headers,
    verified_customer,
    wait_for,
    wait_for_link,
)

pytestmark = pytest.mark.integration

TENANT = "erasure-tours"
PASSWORD = "kayak-at-dawn-on-a-still-lake"


@pytest.fixture(scope="module")
def system(tmp_path_factory, kafka_bootstrap_servers):
    system = System(
        tmp_path_factory.mktemp("erasure"),
        kafka_bootstrap_servers,
        smtp_port=1,
        # One partition, so that a later key record rolls the segment holding the erased key;
        # one-second segments, so that compaction can happen during the test.
        overrides={"accounts": {"TOPIC_PARTITIONS": "1", "SUBJECT_KEYS_SEGMENT_MS": "1000"}},
    )
    system.start("accounts")
    set_tenant_settings(system, TENANT, customer_logins_enabled=True)
    yield system
    system.stop()
    assert system.accounts.errors() == []


def topic(system, name):
    return asyncio.run(read_topic(system.kafka, system.topic(name)))


def subject_keys(system, sealed: bool = False) -> dict[str, list[SubjectKey]]:
    """The records of the accounts keys topic by subject: as the notifier opens them, or as
    they are on the topic (`sealed`)."""
    records: dict[str, list[SubjectKey]] = {}
    for record in topic(system, "accounts.subject-keys"):
        key = SubjectKey.model_validate_json(record.value)
        key = key if sealed else opened_key(system, "notifier", key)
        records.setdefault(str(key.subject_id), []).append(key)
    return records


def traces(system, secrets: list[bytes]) -> list[str]:
    """Where any of `secrets` can still be found: files of the service (all of DATA_DIR, and
    its log) and its topics."""
    found = []
    files = [p for p in (system.root / "accounts").rglob("*") if p.is_file()] + [system.accounts.log]
    for path in files:
        content = path.read_bytes()
        found += [f"{path.name}: {s!r}" for s in secrets if s in content]
    for name in ("accounts.events", "accounts.subject-keys", "accounts.dead-letters"):
        content = b"\n".join((r.value or b"") + (r.key or b"") for r in topic(system, name))
        found += [f"topic {name}: {s!r}" for s in secrets if s in content]
    return found


def directory_row(api, staff, account_id):
    response = api.get(f"/v1/staff/tenants/{TENANT}/accounts/{account_id}", headers=staff)
    return response.json() if response.status_code == 200 else None


def test_a_redacted_customer_cannot_be_found_anywhere_and_a_replay_brings_nothing_back(system):
    api = httpx.Client(base_url=system.accounts.url, timeout=30)
    staff = staff_headers(system, TENANT)
    tag = uuid.uuid4().hex[:8]
    email, name = f"zelda.{tag}@example.com", f"Zelda Quuxley-{tag}"
    phone, street = "+43 699 1122 3344", f"Erasure Lane {tag}"

    # A customer with some history: claimed, verified, a profile, a login link, a staff edit.
    api.post(f"/v1/tenants/{TENANT}/accounts", json={"email": email, "name": name, "password": PASSWORD})
    link = wait_for_link(system, email, "verify_email")
    account_id = link.account_id
    verification = {"token": link.token, "password": PASSWORD}
    assert api.post("/v1/email-verifications", json=verification).status_code == 200
    session = api.post(f"/v1/tenants/{TENANT}/sessions", json={"email": email, "password": PASSWORD}).json()
    customer = {"Authorization": f"Bearer {session['token']}"}
    profile = {
        "phone": phone,
        "address": {"line1": street, "city": "Vienna", "postal_code": "1010", "country": "AT"},
    }
    assert api.patch("/v1/me", headers=customer, json=profile).status_code == 200
    api.post(f"/v1/tenants/{TENANT}/magic-links", json={"email": email})
    wait_for_link(system, email, "magic_link")
    edit = api.patch(
        f"/v1/staff/tenants/{TENANT}/accounts/{account_id}", headers=staff, json={"language": "de"}
    )
    assert edit.status_code == 200
    neighbour = f"neighbour.{tag}@example.com"
    verified_customer(system, None, TENANT, neighbour, PASSWORD)

    secrets = [email.encode(), name.encode(), street.encode(), phone.encode()]
    wait_for(
        lambda: (directory_row(api, staff, account_id) or {}).get("phone") == phone, what="the profile listed"
    )
    assert traces(system, secrets), "the read model holds the details in the clear until redaction"
    [key_record] = subject_keys(system)[account_id]
    raw_key = base64.b64decode(key_record.key)
    [sealed_record] = subject_keys(system, sealed=True)[account_id]
    assert key_record.key not in sealed_record.model_dump_json()  # never in the clear on the bus
    sealed_copy = next(iter(sealed_record.sealed_keys.values()))

    # Redaction.
    assert (
        api.post(f"/v1/staff/tenants/{TENANT}/accounts/{account_id}/redaction", headers=staff).status_code
        == 204
    )
    assert api.get("/v1/me", headers=customer).status_code == 401
    login = {"email": email, "password": PASSWORD}
    assert api.post(f"/v1/tenants/{TENANT}/sessions", json=login).status_code == 401

    def redacted_on_the_bus():
        events = decode(topic(system, "accounts.events"))
        return [e for e in events if e["account_id" if "account_id" in e else "tenant_id"] == account_id]

    mine = wait_for(
        lambda: (
            [e for e in redacted_on_the_bus() if e["event_type"] == "AccountRedacted"]
            and redacted_on_the_bus()
        ),
        what="AccountRedacted on the bus",
    )
    assert mine[-1]["event_type"] == "SessionsRevoked" and mine[-1]["reason"] == "redacted"
    assert mine[-2]["redacted_by"]["kind"] == "staff"
    wait_for(lambda: subject_keys(system)[account_id][-1].key is None, what="the erasure on the keys topic")
    row = wait_for(
        lambda: (r := directory_row(api, staff, account_id)) and r["status"] == "redacted" and r,
        what="the directory scrubbed",
    )
    assert row["email"] is None and row["name"] is None and row["phone"] is None and row["address"] is None
    assert {h["details"].get("email") for h in row["history"] if "email" in h["details"]} == {"[erased]"}
    assert name not in json.dumps(row)

    # Nothing is left in any file of the service, nor in its topics, nor the key in its vault.
    wait_for(lambda: not traces(system, secrets), timeout=30, what="no trace of the customer")
    keys_file = (system.root / "accounts" / "accounts-keys.sqlite3").read_bytes()
    assert raw_key not in keys_file and key_record.key.encode() not in keys_file

    # The keys topic still has the old key record until compaction: roll its segment with a
    # later record (another customer's key) and let the broker's cleaner run.
    time.sleep(1.5)
    api.post(f"/v1/tenants/{TENANT}/accounts", json={"email": f"later.{tag}@example.com", "name": "Later"})

    def key_gone_from_kafka() -> bool:
        values = b"".join(r.value or b"" for r in topic(system, "accounts.subject-keys"))
        return sealed_copy.encode() not in values

    wait_for(key_gone_from_kafka, timeout=90, interval=1, what="the erased key compacted away")
    assert [k.key for k in subject_keys(system)[account_id]] == [None]
    assert any(
        k.key for k in subject_keys(system)[wait_for_link(system, neighbour, "verify_email").account_id]
    )

    # A consumer replaying accounts.events from the start, with every key the topic holds, opens
    # the neighbour's data and nothing of the redacted customer's.
    replay = Vault("sqlite+pysqlite:///:memory:", "replay")
    for keys in subject_keys(system).values():
        for record in keys:
            replay.accept(record)
    opened = {
        e["account_id"]: replay.open(e["email"]).value
        for e in decode(topic(system, "accounts.events"))
        if "email" in e
    }
    assert opened[account_id] is None and neighbour in opened.values()

    # The read model rebuilt from the event log: the customer comes back erased, nothing more.
    system.accounts.stop()
    for path in (system.root / "accounts").glob("accounts-views.sqlite3*"):
        path.unlink()
    system.accounts.start().wait_ready()
    row = wait_for(lambda: directory_row(api, staff, account_id), timeout=60, what="the rebuilt directory")
    assert row["status"] == "redacted" and row["email"] is None and row["name"] is None
    neighbour_page = api.get(f"/v1/staff/tenants/{TENANT}/accounts", headers=staff, params={"q": neighbour})
    assert neighbour_page.json()["total"] == 1
    assert traces(system, secrets) == []
    api.close()

    # The event store itself, opened as an operator would: the account's events read as erased,
    # and the address's reservation cannot be found from the address without the vault's secret.
    system.accounts.stop()
    store = open_store(system, "accounts")
    try:
        claimed = next(e for e in store.repository.event_store.get(uuid.UUID(account_id)))
        assert claimed.email.value is None and claimed.name.value is None
        unkeyed = uuid.uuid5(
            uuid.uuid5(uuid.NAMESPACE_URL, "urn:booking-accounts:accounts:email-addresses"),
            f"{TENANT}/{email}",
        )
        assert uuid.UUID(account_id) in store.repository and unkeyed not in store.repository
        assert store.index.address_id(TENANT, email) in store.repository  # released, for a new claim
    finally:
        store.close()
