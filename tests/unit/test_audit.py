"""What audit tooling sees of an event log, and the tamper-evident export: in memory."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import httpx
import pytest
from pydantic import SecretStr

from backbone.audit import ERASED_MARK as ERASED
from backbone.audit import SEALED_MARK as SEALED
from backbone.audit import AuditLog, folded
from backbone.auditapi import routes
from backbone.auditexport import Export, Selection, digest, verify
from backbone.eventstore import store_env
from backbone.http import create_api
from backbone.personal import Personal, Vault
from backbone.settings import StoreSettings
from services.accounts.application import Accounts, AccountsConfig

PASSWORD = "a-long-and-unguessable-passphrase"


def make_accounts():
    app = Accounts(
        AccountsConfig("https://accounts.example", base64.b64decode(base64.b64encode(b"k" * 32))),
        env=store_env(StoreSettings(kind="memory"), "accounts"),
        vault=Vault("sqlite+pysqlite:///:memory:", "accounts"),
    )
    for tenant in ("lakeside", "hilltop"):
        app.change_settings(tenant, {"customer_logins_enabled": True})
    app.claim_account("lakeside", "ada@example.com", "Ada", "en")
    ada = app.account_by_email("lakeside", "ada@example.com").id
    bob = app.create_account("hilltop", "bob@example.com", "Bob", {})
    app.change_settings("lakeside", {"allow_cancel": True})
    return app, ada, bob


@pytest.fixture(scope="module")
def accounts():
    """Read only: tests that change the log make their own."""
    made = make_accounts()
    yield made
    made[0].close()


def lines_of(app, **selection) -> list[str]:
    return list(Export(AuditLog(app), "accounts", Selection(**selection)).lines())


def test_history_shows_who_did_what_with_personal_data_sealed_and_secrets_redacted(accounts):
    app, ada, _ = accounts
    [claimed] = AuditLog(app).history(ada)
    assert claimed.event_type == "Account.Claimed" and claimed.aggregate_type == "Account"
    assert claimed.version == 1 and claimed.tenant_id == "lakeside"
    assert claimed.actor == "service:unknown"  # no request set a cause in this test
    assert claimed.data["email"] == {"subject_id": str(ada), "sealed": True}
    assert claimed.data["link"] == "[redacted]"  # its token's hash, sealed for the notifier
    assert claimed.data["password_hash"] is None  # chosen when the address is proven, not before
    rendered = json.dumps(claimed.as_dict())
    assert "ada@example.com" not in rendered

    revealed = AuditLog(app, reveal=True).history(ada)[0]
    assert revealed.data["email"] == {"subject_id": str(ada), "value": "ada@example.com"}


def test_password_hashes_are_redacted_even_for_operators():
    app, ada, _ = make_accounts()
    account = app.account(ada)
    account.record_password(password_hash=Personal(ada, app.passwords.hash("x" * 20)), via="change")
    app.save(account)
    for log in (AuditLog(app), AuditLog(app, reveal=True)):
        password_set = log.history(ada)[-1]
        assert password_set.event_type == "Account.PasswordSet"
        assert password_set.data["password_hash"] == "[redacted]"
        assert "argon2" not in json.dumps(password_set.as_dict())
    app.close()


def test_an_erased_customer_shows_as_erased_everywhere():
    app, ada, _ = make_accounts()
    app.erase_subject(ada)
    for log in (AuditLog(app), AuditLog(app, reveal=True)):
        assert log.history(ada)[0].data["name"] == {"subject_id": str(ada), "erased": True}
    exported = "".join(lines_of(app))
    assert "Ada" not in exported and '"erased":true' in exported
    app.close()


def test_an_intact_export_verifies_and_ends_with_its_head(accounts):
    app, _, _ = accounts
    job = Export(AuditLog(app), "accounts")
    lines = list(job.lines())
    assert json.loads(lines[0])["kind"] == "header" and json.loads(lines[-1])["kind"] == "end"
    assert job.records == len(lines) - 2 == app.recorder.max_notification_id()
    result = verify(lines, expect_head=job.head)
    assert result.ok and result.records == job.records and result.head == job.head


def test_an_export_can_be_a_tenant_or_a_time_span(accounts):
    app, _, _ = accounts
    records = [json.loads(x) for x in lines_of(app, tenant_id="hilltop")[1:-1]]
    assert records and {r["tenant_id"] for r in records} == {"hilltop"}
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    future = datetime.now(UTC) + timedelta(days=1)
    assert json.loads(lines_of(app, since=future)[-1])["records"] == 0
    assert verify(lines_of(app, tenant_id="hilltop")).ok


def rewrite(line: str, **changes) -> str:
    return json.dumps(json.loads(line) | changes) + "\n"


@pytest.mark.parametrize(
    ("tamper", "problem", "line", "seq"),
    [
        (lambda x: [*x[:3], rewrite(x[3], actor="staff:mallory"), *x[4:]], "altered", 4, 3),
        (lambda x: x[:3] + x[4:], "removed", 4, 3),
        (lambda x: [*x[:3], x[4], x[3], *x[5:]], "reordered", 4, 3),
        (lambda x: [*x[:4], x[3], *x[4:]], "duplicated", 5, 3),
        (lambda x: x[:-1], "truncated", None, None),
        (lambda x: [*x, x[2]], "inserted", None, None),
    ],
    ids=["altered", "removed", "reordered", "duplicated", "truncated", "appended"],
)
def test_a_tampered_export_fails_at_the_right_record(accounts, tamper, problem, line, seq):
    lines = lines_of(accounts[0])
    result = verify(tamper(lines))
    assert not result.ok and result.problem == problem, result
    if line is not None:
        assert (result.line, result.seq) == (line, seq), result


def test_a_re_hashed_alteration_breaks_the_chain_or_the_head(accounts):
    app, _, _ = accounts
    job = Export(AuditLog(app), "accounts")
    lines = list(job.lines())

    forged = json.loads(lines[3]) | {"actor": "staff:mallory"}
    forged["hash"] = digest(forged, None)
    broken = verify([*lines[:3], json.dumps(forged) + "\n", *lines[4:]])
    assert broken.problem == "altered" and broken.seq == 3 and "re-hashed" in broken.detail

    # Re-hashing everything after it hides it from the chain, but not from the head kept aside.
    rechained, prev = [], None
    for index, text in enumerate(lines):
        record = json.loads(text) | ({"actor": "staff:mallory"} if index == 3 else {})
        record["prev"] = prev or record["prev"]
        record["hash"] = digest(record, None)
        prev = record["hash"]
        rechained.append(json.dumps(record) + "\n")
    assert verify(rechained).ok
    assert verify(rechained, expect_head=job.head).problem == "wrong_head"


def test_an_export_sealed_with_a_key_cannot_be_re_hashed_without_it(accounts):
    app, _, _ = accounts
    key = b"a-secret-the-auditor-keeps-apart"
    lines = list(Export(AuditLog(app), "accounts", key=key).lines())
    assert verify(lines, key=key).ok
    assert verify(lines).problem == "key_required"

    forged = json.loads(lines[2]) | {"actor": "staff:mallory"}
    forged["hash"] = digest(forged, None)  # without the key, the best a forger can do
    result = verify([*lines[:2], json.dumps(forged) + "\n", *lines[3:]], key=key)
    assert (result.problem, result.seq) == ("altered", 2)


async def test_the_audit_api_pages_the_log_and_serves_histories_and_exports_to_the_auditor_only(accounts):
    app, ada, _ = accounts
    api = create_api("test", "1", "test")
    routes(api, app, "accounts", SecretStr("audit-token"))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://test")
    auditor = {"Authorization": "Bearer audit-token"}
    assert (await client.get("/v1/audit/events")).status_code == 401
    assert (await client.get("/v1/audit/events", headers={"Authorization": "Bearer nope"})).status_code == 401

    first = (await client.get("/v1/audit/events", params={"limit": 2}, headers=auditor)).json()
    assert [e["position"] for e in first["events"]] == [1, 2] and first["next_after"] == 2
    rest = (await client.get("/v1/audit/events", params={"after": 2, "limit": 1000}, headers=auditor)).json()
    assert len(first["events"]) + len(rest["events"]) == rest["head"] == app.recorder.max_notification_id()
    hilltop = (await client.get("/v1/audit/events", params={"tenant": "hilltop"}, headers=auditor)).json()
    assert {e["tenant_id"] for e in hilltop["events"]} == {"hilltop"}
    assert (await client.get("/v1/audit/events", params={"limit": 5000}, headers=auditor)).status_code == 422

    history = (await client.get(f"/v1/audit/aggregates/{ada}/events", headers=auditor)).json()
    assert [e["event_type"] for e in history["events"]] == ["Account.Claimed"]
    assert (await client.get(f"/v1/audit/aggregates/{uuid4()}/events", headers=auditor)).status_code == 404

    exported = await client.get("/v1/audit/export", params={"tenant": "lakeside"}, headers=auditor)
    assert exported.headers["content-type"].startswith("application/x-ndjson")
    assert verify(exported.text.splitlines(keepends=True)).ok
    assert "/v1/audit/export" in (await client.get("/openapi.json")).json()["paths"]


async def test_without_an_audit_token_configured_nobody_gets_in(accounts):
    api = create_api("test", "1", "test")
    routes(api, accounts[0], "accounts", None)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://test")
    response = await client.get("/v1/audit/events", headers={"Authorization": "Bearer x"})
    assert response.status_code == 401 and "not enabled" in response.json()["detail"]


def test_a_history_table_keeps_to_one_line_per_field_with_sealed_values_marked(accounts):
    """On a normal terminal (100 columns) every event's row is as tall as its data has fields;
    --json (as_dict) keeps everything."""
    from rich.console import Console

    from ops.cli_audit import history_table

    app, ada, _ = accounts
    records = AuditLog(app).history(ada)
    long_note = "a note that goes on " * 40
    records[0].data["notes"] = {"staff": long_note, "customer": {"subject_id": str(ada), "erased": True}}
    console = Console(width=100, record=True, markup=False)
    console.print(history_table("Account", [("accounts", r) for r in records], console.width))
    text = console.export_text()
    fields = sum(max(len(folded(r.data)), 4) for r in records)
    assert len(text.splitlines()) <= fields + 3  # title, header, rule
    assert (
        f"email: {SEALED}" in text and f"notes.customer: {ERASED}" in text and "notes.staff: a note" in text
    )
    assert "link: [redacted]" in text and "Account.Claimed" in text  # secrets stay redacted
    assert "'sealed': True" not in text and "subject_id" not in text
    assert all(len(line) <= 100 for line in text.splitlines())
    assert records[0].as_dict()["data"]["notes"]["staff"] == long_note  # the record itself is whole


def test_folded_data_marks_personal_values_and_cuts_long_ones():
    assert (SEALED, ERASED) == ("\u2039sealed\u203a", "\u2039erased\u203a")
    data = {
        "email": {"subject_id": "s", "sealed": True},
        "name": {"subject_id": "s", "value": "Ada"},
        "customer": {
            "phone": {"subject_id": "s", "erased": True},
            "tags": ["a", {"subject_id": "s", "sealed": True}],
        },
        "text": "x" * 500,
        "multi": "two\nlines",
    }
    assert folded(data, width=40) == [
        f"email: {SEALED}",
        "name: Ada",
        f"customer.phone: {ERASED}",
        f"customer.tags: [a, {SEALED}]",
        "text: " + "x" * 33 + "…",
        "multi: two lines",
    ]
