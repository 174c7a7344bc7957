"""Every command of the operator tool against a wrong config: one sentence on stderr, exit
code 1, no traceback (unless --debug), and no store created where there was none.

The list of commands is read from the tool itself, so a new command must be added to ARGS."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from backbone.credentials import load_or_create_sealing_keys, load_or_create_signing_key, public_path
from backbone.signing import key_settings
from deploy.local._proc import free_ports
from ops import registry
from ops.cli import app
from ops.config import Deployment

ARGS = {
    "status": [],
    "rebuild": ["bookings"],
    "replay": ["notifier", "--from-offset", "0"],
    "republish": ["accounts"],
    "history": [str(uuid.uuid4())],
    "export": ["bookings", "--output", "{tmp}/export.jsonl"],
    "verify": ["{tmp}/no-such-export.jsonl"],
    "dlq list": ["bookings"],
    "dlq show": ["bookings", "0:0"],
    "dlq retry": ["bookings", "0:0", "--operator", "ops-test"],
    "dlq discard": ["bookings", "0:0", "--reason", "test", "--operator", "ops-test"],
    "emails log": ["--tenant", "t"],
    "emails retry": ["--by", "ops-test", "--all-parked"],
    "positions replay-from-start": ["bookings", "bookings.commands/0", "--operator", "ops-test"],
    "positions accept-log-start": ["bookings", "bookings.commands/0", "--operator", "ops-test"],
    "topics list": [],
    "topics create": [],
}
NEEDS_NO_CONFIG = {"verify"}
NEEDS_NO_STORE = {"topics list", "topics create"}  # the shared settings (and Kafka) only
NEEDS_KAFKA = {
    "status",
    "replay",
    "republish",
    "dlq list",
    "dlq show",
    "dlq retry",
    "dlq discard",
    "positions replay-from-start",
    "positions accept-log-start",
    "topics create",
}


def commands(group, prefix: str = "") -> list[str]:
    found = []
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        found += commands(command, f"{path} ") if hasattr(command, "commands") else [path]
    return found


def test_every_command_of_the_tool_is_in_this_test():
    assert sorted(commands(typer.main.get_command(app))) == sorted(ARGS)


def keys(root: Path) -> dict[str, str]:
    _, notifier_public = load_or_create_sealing_keys(root / "sealing.key")
    signing = root / "session-signing-key.pem"
    load_or_create_signing_key(signing)
    return {
        "NOTIFIER_PUBLIC_KEY": base64.b64encode(notifier_public).decode(),
        "SESSION_PUBLIC_KEY_FILE": str(public_path(signing)),
        "SESSION_SIGNING_KEY_FILE": str(signing),
        "SEALING_KEY_FILE": str(root / "sealing.key"),
        **{k.upper(): str(v) for k, v in key_settings(root / "bus", "ops-test").items()},
    }


def write(path: Path, common: dict[str, str]) -> Path:
    path.write_text("[env]\n" + "".join(f'{k} = "{v}"\n' for k, v in common.items()))
    return path


def invoke(config: Path, command: str, tmp: Path, *options: str):
    args = [a.replace("{tmp}", str(tmp)) for a in ARGS[command]]
    return CliRunner().invoke(app, ["--config", str(config), *options, *command.split(), *args])


def one_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return lines[0]


@pytest.fixture
def wrong(tmp_path):
    """Configs that are wrong in different ways, each with the keys the services require."""
    secrets = keys(tmp_path / "keys")
    (closed,) = free_ports(1)
    empty = tmp_path / "empty"
    empty.mkdir()
    base = {**secrets, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{closed}"}
    return {
        "no store here": (write(tmp_path / "a.toml", {**base, "DATA_DIR": str(empty)}), "no event store at"),
        "PostgreSQL down": (
            write(
                tmp_path / "b.toml",
                {**base, "STORE": "postgres", "POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": str(closed)},
            ),
            f"cannot reach its event store on PostgreSQL 127.0.0.1:{closed}",
        ),
        "a bad value": (
            write(tmp_path / "c.toml", {**base, "DATA_DIR": str(empty), "TOPIC_PARTITIONS": "many"}),
            "settings are incomplete or invalid (TOPIC_PARTITIONS",
        ),
    }, empty


@pytest.mark.parametrize("command", sorted(NEEDS_NO_STORE))
def test_a_bad_value_ends_the_topics_commands_with_one_sentence(command, wrong, tmp_path):
    configs, empty = wrong
    config, says = configs["a bad value"]
    result = invoke(config, command, tmp_path)
    assert result.exit_code == 1 and says in one_line(result)
    assert list(empty.iterdir()) == []


@pytest.mark.parametrize("command", sorted(set(ARGS) - NEEDS_NO_CONFIG - NEEDS_NO_STORE))
def test_a_wrong_config_ends_each_command_with_one_sentence_and_exit_code_1(command, wrong, tmp_path):
    configs, empty = wrong
    for what, (config, says) in configs.items():
        result = invoke(config, command, tmp_path)
        assert result.exit_code == 1, (what, result.output)
        assert says in one_line(result), what
        assert "Traceback" not in result.output
    assert list(empty.iterdir()) == []  # no store created


def test_a_missing_file_to_verify_is_one_sentence_too(tmp_path):
    result = invoke(write(tmp_path / "ops.toml", {}), "verify", tmp_path)
    assert result.exit_code == 1 and "cannot read" in one_line(result)


def test_kafka_out_of_reach_is_one_sentence_for_each_command_that_needs_it(tmp_path):
    """The stores are there (made by the services' own bootstrap), the broker is not."""
    (closed,) = free_ports(1)
    common = {
        **keys(tmp_path / "keys"),
        "DATA_DIR": str(tmp_path / "data"),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{closed}",
    }
    config = write(tmp_path / "ops.toml", common)
    deployment = Deployment.load(config)
    for name in registry.NAMES:
        settings = deployment.settings(name, registry.settings_class(name))
        handle = registry.ServiceHandle(name, registry._load(registry.entry(name).bootstrap)(settings))
        handle.service.read_model.create()  # as the service does when it starts
        handle.close()
    for command in sorted(NEEDS_KAFKA - {"status"}):
        result = invoke(config, command, tmp_path)
        assert result.exit_code == 1, (command, result.output)
        assert f"cannot reach Kafka at 127.0.0.1:{closed}" in one_line(result), command
    status = invoke(config, "status", tmp_path)  # shows what the stores say, then the problem
    assert status.exit_code == 1 and "Traceback" not in status.output
    assert status.output.count(f"cannot reach Kafka at 127.0.0.1:{closed}") == 3  # once per service
    history = invoke(config, "history", tmp_path)  # reads the stores only
    assert history.exit_code == 1 and "no aggregate" in one_line(history)


def test_debug_shows_the_traceback(tmp_path):
    config = write(tmp_path / "ops.toml", {"DATA_DIR": str(tmp_path), "SESSION_PUBLIC_KEY_FILE": "x"})
    result = invoke(config, "rebuild", tmp_path, "--debug")
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.output and "OpsError" in result.output
    assert result.output.strip().splitlines()[-1].startswith("error: bookings: no event store at")


def test_as_a_process_the_issues_own_case_is_one_line_on_stderr(tmp_path):
    """`replay notifier --from-offset 0` against a config without the service's store: it once
    opened an empty new SQLite store and died with 60 lines (`no such table: emails`)."""
    import subprocess
    import sys

    config = write(tmp_path / "ops.toml", {**keys(tmp_path / "keys"), "DATA_DIR": str(tmp_path / "data")})
    argv = [sys.executable, "-m", "ops", "--config", str(config), "replay", "notifier", "--from-offset", "0"]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.startswith("error: notifier: no event store at") and run.stderr.count("\n") == 1
    assert not (tmp_path / "data").exists()
    debug = subprocess.run(
        [*argv[:3], "--debug", *argv[3:]], capture_output=True, text=True, timeout=120, check=False
    )
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr


@pytest.fixture(autouse=True)
def _collected_quietly():
    """faststream leaves the producer of a broker that never connected unclosed (republish
    against no Kafka); collect it here, with asyncio's complaint off, rather than when a later
    test's log handler points at a closed stream."""
    import gc
    import logging

    yield
    asyncio_log = logging.getLogger("asyncio")
    level = asyncio_log.level
    asyncio_log.setLevel(logging.CRITICAL)
    gc.collect()
    asyncio_log.setLevel(level)
