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
    for path_setting in ("session_signing_key_file", "session_public_key_file", "sealing_key_file"):
        path = getattr(settings, path_setting, None)
        if path is not None:  # the keys the one-shot `keys` service makes, on a volume it shares
            assert str(path).startswith("/keys/") and "keys:/keys:ro" in spec["volumes"]
            assert Path(path).name in (Path(__file__).parents[2] / "deploy" / "keys.py").read_text()
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
