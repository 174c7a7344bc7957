from __future__ import annotations

import base64
from datetime import timedelta
from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from backbone.settings import ServiceSettings, long_enough


class AccountsSettings(ServiceSettings):
    http_port: int = 8001
    public_base_url: str = "http://127.0.0.1:8001"  # links in emails point here
    session_signing_key_file: Path | None = None  # default <DATA_DIR>/session-signing-key.pem
    notifier_public_key: str  # base64; links in events are sealed for the notifier with it
    admin_api_token: SecretStr | None = Field(
        default=None, description="The platform operator's token: adds and removes staff members."
    )
    # How long links and sessions last: ISO 8601 durations, e.g. PT10M, PT24H, P3D.
    verification_ttl: timedelta = timedelta(hours=24)
    invitation_ttl: timedelta = timedelta(hours=72)
    magic_link_ttl: timedelta = timedelta(minutes=10)
    password_reset_ttl: timedelta = timedelta(minutes=30)
    session_ttl: timedelta = timedelta(hours=12)
    # Rate limits, e.g. {"claim.email": "5/hour"} (see services/accounts/ratelimits.py).
    rate_limits: dict[str, str] = Field(default_factory=dict)
    rate_limit_storage: str = "async+memory://"
    deferred_capacity: int = Field(default=1000, ge=1, le=100_000)

    @field_validator("admin_api_token")
    @classmethod
    def _admin_token_long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        return long_enough(token, "ADMIN_API_TOKEN")

    def signing_key_path(self) -> Path:
        return self.session_signing_key_file or self.data_dir / "session-signing-key.pem"

    def notifier_key(self) -> bytes:
        return base64.b64decode(self.notifier_public_key)
