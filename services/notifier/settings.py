from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import SecretStr

from backbone.settings import ServiceSettings


class NotifierSettings(ServiceSettings):
    http_port: int = 8003
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_tls: Literal["none", "starttls", "tls"] = "none"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: float = 30.0
    mail_from: str = "Bookings <no-reply@booking-accounts.local>"
    sealing_key_file: Path | None = None  # default <DATA_DIR>/sealing.key (created if missing)
    send_batch_size: int = 100

    def sealing_key_path(self) -> Path:
        return self.sealing_key_file or self.data_dir / "sealing.key"
