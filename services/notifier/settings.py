from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from backbone.settings import ServiceSettings
from services.notifier.domainmodel import DeliveryPolicy


class NotifierSettings(ServiceSettings):
    http_port: int = 8003

    # The mail server (a mail catcher locally, see README).
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_tls: Literal["none", "starttls", "tls"] | None = Field(
        default=None,
        description="Unset: `none` for a mail server on this machine (loopback), else `starttls` "
        "(links that log customers in must not cross a network in the clear).",
    )
    smtp_ca_file: Path | None = Field(
        default=None, description="CA bundle to verify the server with (default: the system's)."
    )
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    smtp_connections: int = Field(default=4, ge=1, le=32, description="SMTP connections in parallel.")
    mail_from: str = "Bookings <no-reply@booking-accounts.local>"
    default_language: str = Field(default="en", pattern=r"^[a-z]{2}$")

    sealing_key_file: Path | None = None  # default <DATA_DIR>/sealing.key (created if missing)

    @property
    def smtp_tls_mode(self) -> Literal["none", "starttls", "tls"]:
        """SMTP_TLS, or what fits the host when it is unset."""
        if self.smtp_tls is not None:
            return self.smtp_tls
        return "none" if _loopback(self.smtp_host) else "starttls"

    # Delivery: batches, backoff, parking.
    send_batch_size: int = Field(default=100, ge=1, le=1000)
    retry_base_seconds: float = Field(default=30.0, gt=0)
    retry_max_seconds: float = Field(default=3600.0, gt=0)
    max_attempts: int = Field(default=8, ge=1, le=100)
    sending_lease_seconds: float = Field(
        default=300.0,
        gt=0,
        description="An attempt without a result for this long is taken as interrupted (its "
        "sender died) and sent again: keep it well above SMTP_TIMEOUT_SECONDS.",
    )

    def sealing_key_path(self) -> Path:
        return self.sealing_key_file or self.data_dir / "sealing.key"

    def delivery_policy(self) -> DeliveryPolicy:
        return DeliveryPolicy(
            retry_base=timedelta(seconds=self.retry_base_seconds),
            retry_cap=timedelta(seconds=self.retry_max_seconds),
            max_attempts=self.max_attempts,
            lease=timedelta(seconds=self.sending_lease_seconds),
        )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
