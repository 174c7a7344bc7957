"""The operator commands, on a SQLite store like the service's: the log, and retrying parked."""

from __future__ import annotations

import json
import uuid

from typer.testing import CliRunner

from backbone.eventstore import store_env
from backbone.follower import read_log
from backbone.personal import Personal, Vault
from backbone.readmodel import Projection, ReadModel
from backbone.settings import StoreSettings
from ops.cli import app as ops
from services.notifier import views
from services.notifier.application import NotDelivered, Notifier
from services.notifier.cli import cli
from services.notifier.domainmodel import CUSTOMER, Email


def test_operators_read_the_log_and_retry_parked_emails(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("STORE", "sqlite")
    store = StoreSettings(kind="sqlite", data_dir=tmp_path)
    vault = Vault(store.vault_url("notifier"), "notifier")
    notifier = Notifier(env=store_env(store, "notifier"), vault=vault)
    subjects = [uuid.uuid4(), uuid.uuid4()]
    emails = [
        Email(
            source_event_id=uuid.uuid4(),
            template="welcome",
            tenant_id="acme",
            audience=CUSTOMER,
            recipient=vault.personal(s, f"p{i}@example.com"),
            language="en",
            data={"name": Personal(s, "P")},
            account_id=s,
            booking_id=None,
            erase_recipient_when_done=False,
        )
        for i, s in enumerate(subjects)
    ]
    notifier.save(*emails)
    for email in notifier.start_attempts([e.id for e in emails]):
        notifier.record_outcomes([NotDelivered(email.id, email.attempts, "550 no such mailbox", True)])
    notifier.erase_subject(subjects[1])
    read_model = ReadModel(store.views_url("notifier"), views.metadata)
    read_model.create()
    projection = Projection(notifier, read_model, "notifier.views", views.projector(vault))
    projection.apply(read_log(notifier, 0, 100))
    notifier.close()
    read_model.close()
    runner = CliRunner()

    shown = runner.invoke(cli, ["log", "--tenant", "acme", "--json"])
    assert shown.exit_code == 0, shown.output
    entries = [json.loads(line) for line in shown.output.splitlines()]
    assert sorted((e["to"] or "", e["status"]) for e in entries) == [
        ("", "parked"),
        ("p0@example.com", "parked"),
    ]
    assert runner.invoke(cli, ["log", "--tenant", "other", "--json"]).output == ""

    # The same, as part of the one ops CLI, with the store named in its config file.
    monkeypatch.delenv("DATA_DIR")
    config = tmp_path / "ops.toml"
    config.write_text(f'[services.notifier.env]\nDATA_DIR = "{tmp_path}"\nSTORE = "sqlite"\n')
    via_ops = runner.invoke(ops, ["--config", str(config), "emails", "log", "--tenant", "acme", "--json"])
    assert via_ops.exit_code == 0, via_ops.output
    assert sorted(json.loads(line)["status"] for line in via_ops.output.splitlines()) == ["parked"] * 2
    config.write_text('[services.notifier.env]\nSTORE = "cassandra"\n')
    refused = runner.invoke(ops, ["--config", str(config), "emails", "log", "--tenant", "acme"])
    assert refused.exit_code == 1 and "STORE" in refused.output
    monkeypatch.setenv("DATA_DIR", str(tmp_path))

    dry = runner.invoke(cli, ["retry", "--by", "alice", "--all-parked", "--dry-run"])
    assert dry.exit_code == 0 and "2 of 2 to retry" in dry.output
    done = runner.invoke(cli, ["retry", "--by", "alice", "--all-parked", "--tenant", "acme"])
    assert done.exit_code == 0 and "2 of 2 retried" in done.output
    again = runner.invoke(cli, ["retry", "--by", "alice", "--email", str(emails[0].id)])
    assert again.exit_code == 1 and "0 of 1 retried" in again.output and "this one is queued" in again.output

    notifier = Notifier(
        env=store_env(store, "notifier"), vault=Vault(store.vault_url("notifier"), "notifier")
    )
    try:
        retries = [e for e in notifier.events.get(emails[0].id) if type(e).__name__ == "RetryRequested"]
        assert [r.by for r in retries] == ["operator:alice"]
        assert notifier.email(emails[0].id).status == "queued"
    finally:
        notifier.close()
