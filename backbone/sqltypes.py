"""Column types, value conversions and the engine of a database server, shared by the SQL
tables the services keep beside their event stores (read models, the personal-data vault)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

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


def jsonable(value: Any) -> Any:
    """Event data (Decimal, datetime, UUID inside lists and dicts) as plain JSON values."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    return value


POOL_OPTIONS = ("pool_size", "max_overflow")


def server_engine(url: str, pool_size: int, max_overflow: int) -> sa.Engine:
    """An engine for a database server (PostgreSQL). The URL may carry its pool's size as
    `pool_size` and `max_overflow` (see `StoreSettings.views_url`): taken from it here, since
    they are options of the pool, not of the connection; the others (sslmode, ...) go to libpq."""
    parsed = sa.engine.make_url(url)
    pool = {name: int(parsed.query[name]) for name in POOL_OPTIONS if name in parsed.query}
    options = {"pool_size": pool_size, "max_overflow": max_overflow, **pool}
    return sa.create_engine(parsed.difference_update_query(POOL_OPTIONS), pool_pre_ping=True, **options)
