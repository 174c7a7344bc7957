"""`python -m deploy.local postgres start` prints settings that follow the rule of
POSTGRES_DBNAME (backbone.settings.postgres_database): set for every service, as a new user
would, they give each service its own database, which the command created."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from pydantic import SecretStr

from backbone.settings import StoreSettings
from ops.registry import NAMES

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
SETTING = re.compile(r"^([A-Z_]+)=(.*)$")


def test_the_printed_settings_give_each_service_its_own_database():
    command = [sys.executable, "-m", "deploy.local", "postgres", "start"]
    server = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    printed: dict[str, str] = {}
    output = []
    try:
        assert server.stdout is not None
        for line in server.stdout:  # until it says it is ready (or exits: the loop ends)
            output.append(line)
            if match := SETTING.match(line.strip()):
                printed[match[1]] = match[2]
            if "Ctrl-C to stop" in line:
                break
        assert printed.get("POSTGRES_DBNAME") == "booking", "".join(output)
        store = StoreSettings(
            kind=printed["STORE"],  # type: ignore[arg-type]
            postgres_host=printed["POSTGRES_HOST"],
            postgres_port=int(printed["POSTGRES_PORT"]),
            postgres_user=printed["POSTGRES_USER"],
            postgres_password=SecretStr(printed["POSTGRES_PASSWORD"]),
            postgres_dbname=printed["POSTGRES_DBNAME"],
        )
        databases = {name: store.postgres_database(name) for name in NAMES}
        assert databases == {name: f"booking_{name}" for name in NAMES}
        for database in databases.values():  # each there, and empty for its service to fill
            with psycopg.connect(
                host=store.postgres_host,
                port=store.postgres_port,
                user=store.postgres_user,
                password=store.postgres_password.get_secret_value(),
                dbname=database,
                connect_timeout=10,
            ) as conn:
                assert conn.execute("SELECT current_database()").fetchone() == (database,)
    finally:
        server.send_signal(signal.SIGINT)  # Ctrl-C: the server stops and its data is discarded
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
