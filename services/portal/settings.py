"""The portal's settings, read from the environment like the services' (12-factor)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PortalSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    http_host: str = "127.0.0.1"
    http_port: int = 8004

    # The services it calls (their HTTP APIs; the portal has no store and no bus of its own).
    accounts_url: str = "http://127.0.0.1:8001"
    bookings_url: str = "http://127.0.0.1:8002"
    notifier_url: str = "http://127.0.0.1:8003"
    backend_timeout_seconds: float = Field(default=10.0, gt=0)

    data_dir: Path = Path(".local/data")
    cookie_key_file: Path | None = Field(
        default=None,
        description="Fernet key that seals the session cookie (default <DATA_DIR>/portal-cookie.key, "
        "created if missing). Several portal instances share one.",
    )
    secure_cookies: bool | None = Field(
        default=None,
        description="Mark cookies Secure: true, false, or unset to decide per request (https or not).",
    )
    session_hours: int = Field(default=12, ge=1, le=24 * 30, description="A staff session's length.")
    default_language: Literal["en", "de"] = "en"

    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"

    def cookie_key_path(self) -> Path:
        return self.cookie_key_file or self.data_dir / "portal-cookie.key"
