"""The OpenAPI document of the bookings service's staff API (`api_staff.py`), committed at
docs/api/bookings-staff.openapi.json for the staff tools and back offices built on it.

    python -m services.bookings.openapi          # check: exit 1 if the committed file is stale
    python -m services.bookings.openapi --write  # (re)write it

Only the staff routes: the customer routes (`api.py`) are documented at the service's /docs.
`tests/unit/bookings/test_staff_api.py` fails when the committed document no longer matches.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from backbone.http import create_api
from services.bookings import api_staff

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "api" / "bookings-staff.openapi.json"


def document() -> dict[str, Any]:
    api = create_api(
        title="booking-accounts: bookings, staff API",
        version="1.0.0",
        description="A tenant's bookings for its staff: list and search, one booking with its history, "
        "payments and cancellation, and cancelling (with the override of the customer rules and the "
        "refund due). Authorization: Bearer <staff API key issued by accounts>.",
    )
    api.include_router(api_staff.router)
    schema = api.openapi()
    schema["paths"] = {p: ops for p, ops in schema["paths"].items() if p.startswith("/v1/staff/")}
    components = schema.get("components", {}).get("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    return schema


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


def is_current() -> bool:
    return DOCUMENT.exists() and DOCUMENT.read_text() == render()


if __name__ == "__main__":
    if "--write" in sys.argv:
        DOCUMENT.write_text(render())
    elif not is_current():
        print(f"{DOCUMENT} is stale: run `python -m services.bookings.openapi --write`", file=sys.stderr)
        sys.exit(1)
