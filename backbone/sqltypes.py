"""Column types, value conversions and the engine of a database server, shared by the SQL
tables the services keep beside their event stores (read models, the personal-data vault)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID

import orjson
import sqlalchemy as sa


class UtcDateTime(sa.types.TypeDecorator):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite keeps none)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC).replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def bind_processor(self, dialect: Any) -> Callable[[Any], Any] | None:
        """On SQLite, `process_bind_param` and the dialect's DATETIME text ("YYYY-MM-DD
        HH:MM:SS.ffffff", which SQLAlchemy builds with a `%` format of seven fields) in one
        step: a rebuild converts millions of timestamps (4 % of its CPU went to the two)."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            return value.astimezone(UTC).isoformat(" ", "microseconds")[:-6]  # without "+00:00"

        return process


def jsonable(value: Any) -> Any:
    """Event data (Decimal, datetime, UUID inside lists and dicts) as plain JSON values."""
    kind = type(value)  # the exact types first: a projection calls this for every event
    if kind is str or kind is int or kind is bool or kind is float or value is None:
        return value
    if kind is dict:
        return {k if type(k) is str else str(k): jsonable(v) for k, v in value.items()}
    if kind is list:
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    return value


def json_text(value: Any) -> str:
    """The text of a JSON column (the engines' `json_serializer`): orjson's, a tenth of the
    standard library's CPU; the same values read back."""
    return orjson.dumps(value).decode()


POOL_OPTIONS = ("pool_size", "max_overflow")


def server_engine(url: str, pool_size: int, max_overflow: int, **engine_options: Any) -> sa.Engine:
    """An engine for a database server (PostgreSQL). The URL may carry its pool's size as
    `pool_size` and `max_overflow` (see `StoreSettings.views_url`): taken from it here, since
    they are options of the pool, not of the connection; the others (sslmode, ...) go to libpq."""
    parsed = sa.engine.make_url(url)
    pool = {name: int(parsed.query[name]) for name in POOL_OPTIONS if name in parsed.query}
    options = {"pool_size": pool_size, "max_overflow": max_overflow, **pool}
    return sa.create_engine(
        parsed.difference_update_query(POOL_OPTIONS), pool_pre_ping=True, **options, **engine_options
    )


T = TypeVar("T")

_RACES = ("already exists", "concurrently updated", 'violates unique constraint "pg_')


def created_concurrently(error: BaseException) -> bool:
    """Whether a failed CREATE lost a race with another instance creating the same table at
    the same moment (PostgreSQL's `IF NOT EXISTS` and `CREATE OR REPLACE` are not atomic: the
    loser gets a unique violation on the catalog, "already exists", or "tuple concurrently
    updated")."""
    while error is not None:
        if any(sign in str(error) for sign in _RACES):
            return True
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return False


def creating_tables(create: Callable[[], T], attempts: int = 5) -> T:
    """Run `create` (which creates tables if missing), again if it lost a race with another
    instance starting at the same time: the second run finds the tables there."""
    for attempt in range(1, attempts + 1):
        try:
            return create()
        except Exception as error:
            if attempt == attempts or not created_concurrently(error):
                raise
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")
