"""The accounts API's OpenAPI document, committed at docs/api/accounts.openapi.json.

    python -m services.accounts.openapi          # check: exit 1 if the committed file is stale
    python -m services.accounts.openapi --write  # (re)write it

`tests/unit/accounts/test_openapi.py` fails when the committed document no longer matches the
code, like the contract schemas do.
"""

from __future__ import annotations

import base64
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from backbone.credentials import load_or_create_signing_key
from backbone.signing import key_settings
from services.accounts.bootstrap import bootstrap
from services.accounts.settings import AccountsSettings

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "api" / "accounts.openapi.json"


def document() -> dict[str, Any]:
    """The document as the service serves it at /openapi.json (built without any infrastructure)."""
    with tempfile.TemporaryDirectory() as tmp:
        load_or_create_signing_key(Path(tmp) / "session-signing-key.pem")  # made by deploy/keys.py
        settings = AccountsSettings(
            store="memory",
            data_dir=Path(tmp),
            notifier_public_key=base64.b64encode(bytes(32)).decode(),
            **key_settings(Path(tmp) / "bus", "accounts"),
        )
        service = bootstrap(settings)
        try:
            return service.api.openapi()
        finally:
            service.app.close()
            if service.read_model is not None:
                service.read_model.close()


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


def is_current() -> bool:
    return DOCUMENT.exists() and DOCUMENT.read_text() == render()


if __name__ == "__main__":
    if "--write" in sys.argv:
        DOCUMENT.parent.mkdir(parents=True, exist_ok=True)
        DOCUMENT.write_text(render())
    elif not is_current():
        print(f"{DOCUMENT} is stale: run `python -m services.accounts.openapi --write`", file=sys.stderr)
        sys.exit(1)
