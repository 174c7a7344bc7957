from __future__ import annotations

from pathlib import Path

from backbone.settings import ServiceSettings


class BookingsSettings(ServiceSettings):
    http_port: int = 8002
    session_public_key_file: Path  # the accounts service's session verification key (PEM)
