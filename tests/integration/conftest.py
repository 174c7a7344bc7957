"""Fixtures shared by integration tests (the session-wide servers are in tests/conftest.py)."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path):
    """A URL of an empty database: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+pysqlite:///{tmp_path / 'shared-keys.sqlite3'}"
        return
    postgres = request.getfixturevalue("postgres")
    name = f"vault_{uuid.uuid4().hex[:10]}"
    postgres.create_database(name)
    try:
        yield postgres.sqlalchemy_url(name)
    finally:
        postgres.drop_database(name)
