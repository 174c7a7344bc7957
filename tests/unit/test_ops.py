"""The operator tool's configuration and the fencing its rebuild relies on, in memory."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from faststream.kafka import KafkaBroker
from typer.testing import CliRunner

from backbone.eventstore import store_env
from backbone.inbox import Inbox
from backbone.readmodel import PositionConflict, ReadModel
from backbone.settings import StoreSettings
from contracts.catalog import ALL_COMMANDS, Catalog
from ops import registry
from ops.cli import app
from ops.config import Deployment, OpsError
from ops.replay import ReplayReport, _starts
from services.bookings.application import Bookings
from services.bookings.handlers import HANDLERS
from services.bookings.settings import BookingsSettings

CONFIG = """
[env]
KAFKA_BOOTSTRAP_SERVERS = "kafka-1:9092"
TOPIC_PARTITIONS = 6

[services.bookings.env]
SESSION_PUBLIC_KEY_FILE = "/etc/booking-accounts/session.pub.pem"
TOPIC_PARTITIONS = 12
STORE = "postgres"
"""


def test_a_config_file_overrides_the_environment_and_a_service_table_overrides_both(tmp_path, monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "from-the-environment:9092")
    monkeypatch.setenv("POSTGRES_HOST", "db.internal")
    path = tmp_path / "ops.toml"
    path.write_text(CONFIG)
    settings = Deployment.load(path).settings("bookings", BookingsSettings)
    assert settings.kafka_bootstrap_servers == "kafka-1:9092"
    assert settings.topic_partitions == 12 and settings.store == "postgres"
    assert settings.postgres_host == "db.internal"  # what the file does not say, the environment does


def test_a_typo_or_a_missing_setting_is_an_error_that_names_it(tmp_path, monkeypatch):
    monkeypatch.delenv("SESSION_PUBLIC_KEY_FILE", raising=False)
    path = tmp_path / "ops.toml"
    path.write_text('[services.bookings.env]\nSESION_PUBLIC_KEY_FILE = "x"\n')
    with pytest.raises(OpsError, match=r"unknown settings.*SESION_PUBLIC_KEY_FILE"):
        Deployment.load(path).settings("bookings", BookingsSettings)
    with pytest.raises(OpsError, match="SESSION_PUBLIC_KEY_FILE"):
        Deployment().settings("bookings", BookingsSettings)
    path.write_text("[env\n")
    with pytest.raises(OpsError, match="cannot read the config file"):
        Deployment.load(path)


def test_an_in_memory_or_unknown_service_is_refused(monkeypatch):
    monkeypatch.setenv("SESSION_PUBLIC_KEY_FILE", "/nowhere.pem")
    deployment = Deployment(services={"bookings": {"STORE": "memory"}})
    with pytest.raises(OpsError, match="STORE=memory"):
        registry.build("bookings", deployment)
    with pytest.raises(OpsError, match="no service 'billing'"):
        registry.build("billing", deployment)


def test_the_cli_says_what_is_wrong_and_exits_non_zero(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["--config", str(tmp_path / "missing.toml"), "status"])
    assert result.exit_code == 1 and "cannot read the config file" in result.output
    export = tmp_path / "export.jsonl"
    export.write_text('{"kind": "event"}\n')
    result = runner.invoke(app, ["verify", str(export)])
    assert result.exit_code == 1 and "not_an_export" in result.output
    assert runner.invoke(app, ["rebuild"]).exit_code == 2  # usage


def test_a_projection_position_moves_only_from_where_its_batch_started():
    metadata = sa.MetaData()
    read_model = ReadModel("sqlite+pysqlite:///:memory:", metadata)
    read_model.create()
    with read_model.engine.begin() as conn:
        read_model.advance(conn, "views", 10, previous=0)
    with pytest.raises(PositionConflict, match="at 10, not at 5"), read_model.engine.begin() as conn:
        read_model.advance(conn, "views", 20, previous=5)  # a batch read before a rebuild's switch
    with read_model.engine.begin() as conn:
        read_model.advance(conn, "views", 20, previous=10)
    assert read_model.position("views") == 20


@pytest.fixture
def inbox():
    app = Bookings(env=store_env(StoreSettings(kind="memory"), "bookings"))
    yield Inbox(
        service="bookings",
        name="bookings.inbox",
        app=app,
        broker=KafkaBroker(),
        topics=["bookings.commands"],
        catalog=Catalog(ALL_COMMANDS),
        handlers=HANDLERS,
        dead_letter_topic="bookings.dead-letters",
    )
    app.close()


def test_a_replay_never_makes_a_consumer_skip_what_it_has_not_applied(inbox):
    tps = [("bookings.commands", p) for p in range(3)]
    inbox.start_at("bookings.commands", 0, 5)  # applied up to offset 4
    inbox.start_at("bookings.commands", 2, 30)  # applied up to offset 29
    report = ReplayReport("bookings.inbox", "inbox", dry_run=False)
    begins = dict.fromkeys(tps, 0)
    starts = _starts(inbox, tps, begins, dict.fromkeys(tps, 10), report, dry_run=False)
    assert starts[tps[0]] == 5  # not yet applied from 5: replayed from there, not from 10
    assert starts[tps[1]] == 10  # never applied anything here: starts where asked ...
    assert inbox.stored_position(*tps[1]) == 10  # ... and the service goes on from there
    assert starts[tps[2]] == 10  # applied already up to 29: re-read, skipped as redelivered
    assert len(report.notes) == 2


def test_a_dry_run_replay_records_no_position(inbox):
    tp = ("bookings.commands", 1)
    report = ReplayReport("bookings.inbox", "inbox", dry_run=True)
    assert _starts(inbox, [tp], {tp: 0}, {tp: 7}, report, dry_run=True) == {tp: 7}
    assert inbox.stored_position(*tp) == 0 and "left out" in report.notes[0]


def _files(path):
    return sorted(p.name for p in path.rglob("*"))


def test_the_tool_never_creates_a_store_it_says_which_is_missing_in_one_line(tmp_path, monkeypatch):
    """A config that names no store (DATA_DIR elsewhere, STORE unset) must not open an empty
    new one, as it once did (`no such table: emails`, 60 lines of traceback)."""
    monkeypatch.setenv("SESSION_PUBLIC_KEY_FILE", str(tmp_path / "nowhere.pem"))
    data = tmp_path / "data"
    data.mkdir()
    path = tmp_path / "ops.toml"
    path.write_text(f'[env]\nDATA_DIR = "{data}"\nKAFKA_BOOTSTRAP_SERVERS = "127.0.0.1:1"\n')
    runner = CliRunner()
    commands = (
        ["replay", "notifier", "--from-offset", "0"],
        ["status", "bookings"],
        ["emails", "log", "--tenant", "t"],
    )
    for args in commands:
        result = runner.invoke(app, ["--config", str(path), *args])
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "no event store at" in lines[0] and "-events.sqlite3" in lines[0], lines
    assert _files(data) == []  # nothing created


def test_an_empty_store_is_refused_too(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "notifier-events.sqlite3").touch()  # e.g. made by an older tool
    deployment = Deployment(common={"DATA_DIR": str(data)})
    with pytest.raises(OpsError, match=r"notifier: the event store .* is empty \(no stored_events table\)"):
        registry.build("notifier", deployment)
    assert _files(data) == ["notifier-events.sqlite3"]
