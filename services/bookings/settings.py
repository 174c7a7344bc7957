from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from backbone.settings import ServiceSettings, long_enough


class BookingsSettings(ServiceSettings):
    http_port: int = 8002
    session_public_key_file: Path  # the accounts service's session verification key (PEM)
    admin_api_token: SecretStr | None = Field(
        default=None,
        description="The platform operator's token: registers and revokes command publishers' keys.",
    )
    accept_unsigned_commands: bool = Field(
        default=False,
        description="Local development only: apply commands that carry no signature (as if "
        "from a publisher allowed everything). Never in production: anyone who can write "
        "bookings.commands could then act on any tenant (docs/security.md).",
    )

    @field_validator("admin_api_token")
    @classmethod
    def _admin_token_long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        return long_enough(token, "ADMIN_API_TOKEN")
