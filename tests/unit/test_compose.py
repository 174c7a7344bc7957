"""The compose deployment cannot run here (no Docker engine), but what it configures can be
checked: every service gets every setting it requires, and the image holds every package."""

from __future__ import annotations

import os
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from backbone.settings import postgres_database
from services.accounts.settings import AccountsSettings
from services.bookings.settings import BookingsSettings
from services.notifier.settings import NotifierSettings
from services.portal.settings import PortalSettings

COMPOSE = Path(__file__).parents[2] / "deploy" / "compose"
SETTINGS = {
    "accounts": AccountsSettings,
    "bookings": BookingsSettings,
    "notifier": NotifierSettings,
    "portal": PortalSettings,
}
# The services with a store and a place on the bus (the portal has neither: it calls their APIs).
BACKENDS = ("accounts", "bookings", "notifier")


def service(name: str) -> dict:
    return yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())["services"][name]


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_each_service_is_given_every_setting_it_requires(name, monkeypatch):
    spec = service(name)
    env = {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v)) for k, v in spec["environment"].items()}
    # Variables the command sets before it starts the service (`X=$$(cat file) exec ...`).
    env |= dict.fromkeys(re.findall(r"(\w+)=\$\$\(", " ".join(spec["command"])), "c2VhbGluZyBrZXk=")
    for variable in list(os.environ):  # only what compose gives
        monkeypatch.delenv(variable)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = SETTINGS[name]()
    assert f"services.{name}" in " ".join(spec["command"])
    path_settings = ("session_signing_key_file", "session_public_key_file", "sealing_key_file")
    for path_setting in (*path_settings, "bus_key_file", "bus_trusted_keys_dir"):
        path = getattr(settings, path_setting, None)
        if path is not None:  # the keys the one-shot `keys` service makes, on a volume it shares
            assert str(path).startswith("/keys/") and "keys:/keys:ro" in spec["volumes"]
            assert Path(path).name in (Path(__file__).parents[2] / "deploy" / "keys.py").read_text()
    if name in BACKENDS:
        assert settings.bus_key_file == Path(f"/keys/bus/{name}.key")
    assert service("keys")["command"] == ["python", "-m", "deploy.keys", "/keys"]


def test_the_image_holds_every_package_the_project_installs():
    pyproject = tomllib.loads((COMPOSE.parents[1] / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {
        shlex.split(line)[1]
        for line in (COMPOSE / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ") and "./" in line
    }
    assert packages <= copied


def test_the_compose_file_is_valid_against_the_compose_specification():
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE / "docker-compose.yml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_services_scale_behind_the_edge_on_postgres():
    """No service holds a fixed host port (`--scale bookings=3` works); the edge holds them;
    every service waits for PostgreSQL and Kafka to be healthy, and reports its own health."""
    spec = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())["services"]
    for name in SETTINGS:
        assert "ports" not in spec[name], name
        assert spec["edge"]["depends_on"][name]["condition"] in ("service_healthy", "service_started")
    for name in BACKENDS:
        assert spec[name]["environment"]["STORE"] == "postgres"
        env = spec[name]["environment"]
        assert postgres_database(env.get("POSTGRES_DBNAME"), name) == name  # what the init script makes
        assert {"kafka", "postgres"} <= set(spec[name]["depends_on"])
        assert "/ready" in " ".join(spec[name]["healthcheck"]["test"])
        assert spec["edge"]["depends_on"][name]["condition"] == "service_healthy"
    init = (COMPOSE / "postgres-init.sql").read_text()
    assert all(f"CREATE DATABASE {name};" in init for name in BACKENDS)
    for name, service in spec.items():
        image = service.get("image", "")
        if "booking-accounts" not in image:  # third-party images are pinned to a release
            tag = image.rsplit(":", 1)[-1]
            assert ":" in image and tag != "latest" and any(c.isdigit() for c in tag), (name, image)


def test_accounts_replicas_share_their_rate_limits_on_the_redis_service():
    url = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", service("accounts")["environment"]["RATE_LIMIT_STORAGE"])
    assert url == "async+redis://:booking@redis:6379/0"
    assert service("accounts")["depends_on"]["redis"] == {"condition": "service_healthy"}
    redis = service("redis")
    assert "--requirepass" in redis["command"] and "ports" not in redis
    assert "ping" in " ".join(redis["healthcheck"]["test"])
