"""Several instances creating their tables at the same moment (PostgreSQL's IF NOT EXISTS is
not atomic): the loser runs the creation again; any other failure is not retried. The race
itself shows in tests/integration/test_scale_out.py, where three instances start at once."""

from __future__ import annotations

import pytest

from backbone.sqltypes import created_concurrently, creating_tables


def test_a_creation_that_lost_the_race_is_run_again():
    calls = []

    def create():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("relation creation failed") from Exception(
                'duplicate key value violates unique constraint "pg_type_typname_nsp_index"'
            )
        return "created"

    assert creating_tables(create) == "created" and len(calls) == 2


def test_other_failures_are_not_retried():
    calls = []

    def create():
        calls.append(1)
        raise PermissionError("permission denied for schema public")

    with pytest.raises(PermissionError):
        creating_tables(create)
    assert len(calls) == 1
    assert created_concurrently(Exception("tuple concurrently updated"))
    assert not created_concurrently(Exception("connection refused"))
