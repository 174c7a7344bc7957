"""How the operator tool is pointed at a deployment: the services' own settings.

The tool builds each service from the same settings the service reads (its `settings.py`
class), so it opens the same stores and topics. Values come, each overriding the one before:

1. the process environment, exactly as the services read it;
2. the `[env]` table of a config file (`--config FILE` or `$BOOKING_ACCOUNTS_CONFIG`): for
   every service;
3. its `[services.<name>.env]` table: for one service.

    [env]
    KAFKA_BOOTSTRAP_SERVERS = "kafka-1:9092"
    STORE = "postgres"
    POSTGRES_HOST = "db.internal"

    [services.bookings.env]
    POSTGRES_DBNAME = "bookings=bookings_2024"   # one service's database, named outright
    SESSION_PUBLIC_KEY_FILE = "/etc/booking-accounts/session-signing-key.pub.pem"

Secrets can stay in the environment (or in a file readable only by operators). `./deploy/up`
writes `.local/ops.toml` for the local deployment.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import EnvSettingsSource

from backbone.settings import ServiceSettings

CONFIG_ENV = "BOOKING_ACCOUNTS_CONFIG"

S = TypeVar("S", bound=ServiceSettings)


class OpsError(Exception):
    """Something the operator can fix: the message says what."""


@dataclass(frozen=True)
class Deployment:
    common: dict[str, str] = field(default_factory=dict)
    services: dict[str, dict[str, str]] = field(default_factory=dict)
    source: str = "the environment"

    @classmethod
    def load(cls, path: Path | None = None) -> Deployment:
        path = path or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
        if path is None:
            return cls()
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise OpsError(f"cannot read the config file {path}: {error}") from None
        services = raw.get("services", {})
        return cls(
            common=_strings(raw.get("env", {}), f"{path} [env]"),
            services={
                name: _strings(table.get("env", {}), f"{path} [services.{name}.env]")
                for name, table in services.items()
            },
            source=str(path),
        )

    def settings(self, name: str, settings_class: type[S]) -> S:
        """The service's settings: environment, then the file's [env], then its own table."""
        values = {**self.common, **self.services.get(name, {})}
        fields = settings_class.model_fields
        unknown = sorted(k for k in self.services.get(name, {}) if k.lower() not in fields)
        if unknown:
            known = ", ".join(sorted(f.upper() for f in fields))
            raise OpsError(f"{name}: unknown settings {unknown} in {self.source} (known: {known})")
        try:
            # Read as the environment would be, so that JSON values (RATE_LIMITS) are decoded.
            source = EnvSettingsSource(settings_class, case_sensitive=False)
            source.env_vars = {k.lower(): v for k, v in values.items() if k.lower() in fields}
            settings = settings_class(**source())
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in error.errors(include_url=False)
            )
            raise OpsError(
                f"{name}: its settings are incomplete or invalid ({problems}); set them in the "
                f"environment or in the config file's [services.{name}.env]"
            ) from None
        if settings.store == "postgres":
            try:
                settings.store_settings().postgres_database(name)  # a mapping must name it
            except ValueError as error:
                raise OpsError(f"{name}: {error}") from None
        return settings


def _strings(table: Any, where: str) -> dict[str, str]:
    if not isinstance(table, dict):
        raise OpsError(f"{where} must be a table of NAME = value")
    return {str(k).upper(): _text(v) for k, v in table.items()}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
