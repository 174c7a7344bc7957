from __future__ import annotations

import base64
from datetime import timedelta
from pathlib import Path

from pydantic import SecretStr

from backbone.settings import ServiceSettings


class AccountsSettings(ServiceSettings):
    http_port: int = 8001
    public_base_url: str = "http://127.0.0.1:8001"  # links in emails point here
    session_signing_key_file: Path | None = None  # default <DATA_DIR>/session-signing-key.pem
    notifier_public_key: str  # base64; links in events are sealed for the notifier with it
    verification_ttl_hours: int = 24
    staff_api_token: SecretStr  # bearer token of the staff API

    @property
    def verification_ttl(self) -> timedelta:
        return timedelta(hours=self.verification_ttl_hours)

    def signing_key_path(self) -> Path:
        return self.session_signing_key_file or self.data_dir / "session-signing-key.pem"

    def notifier_key(self) -> bytes:
        return base64.b64decode(self.notifier_public_key)
