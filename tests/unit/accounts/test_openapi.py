"""The committed OpenAPI document of the accounts service is the one the code serves."""

from __future__ import annotations

from services.accounts import openapi


def test_the_committed_openapi_document_is_current():
    assert openapi.is_current(), "run `python -m services.accounts.openapi --write` and commit the file"


def test_every_error_is_documented_as_problem_json():
    document = openapi.document()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith("4"):
                    assert "application/problem+json" in response["content"], (path, method, status)
    assert "HTTPValidationError" not in document["components"]["schemas"]
