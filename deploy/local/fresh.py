"""`./deploy/up --fresh`: every store the services use starts empty, or nothing starts.

Starting Kafka afresh while a service keeps its stores is exactly how stored positions from
another life of a topic come about (see backbone/topiclife.py): so --fresh clears the
services' PostgreSQL databases (event store, vault and read models all live in the service's
database when STORE=postgres) as well as .local/kafka and .local/data, and refuses, saying
why, when it cannot clear one of them. Nothing is deleted before every database was reached.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from backbone.settings import postgres_database


class FreshRefused(Exception):
    """A store could not be cleared: nothing was started, the reason says what to do."""


@dataclass(frozen=True)
class PostgresStore:
    host: str
    port: int
    user: str
    password: str
    dbname: str
    schema: str | None

    def describe(self) -> str:
        where = f"schema {self.schema} of " if self.schema else ""
        return f"{where}database {self.dbname} at {self.host}:{self.port}"


def postgres_stores(envs: Mapping[str, Mapping[str, str]]) -> list[PostgresStore]:
    """The PostgreSQL databases (or schemas) the services are configured with, each once
    (`POSTGRES_DBNAME` read as the services read it: `backbone.settings.postgres_database`)."""
    found: list[PostgresStore] = []
    for service, env in envs.items():
        if env.get("STORE", "sqlite") != "postgres":
            continue
        store = PostgresStore(
            env.get("POSTGRES_HOST", "127.0.0.1"),
            int(env.get("POSTGRES_PORT", "5432")),
            env.get("POSTGRES_USER", "postgres"),
            env.get("POSTGRES_PASSWORD", ""),
            postgres_database(env.get("POSTGRES_DBNAME"), service),
            env.get("POSTGRES_SCHEMA") or None,
        )
        if store not in found:
            found.append(store)
    return found


def clear_postgres(stores: list[PostgresStore]) -> list[str]:
    """Drop and create again each database (or schema). Checks first that every server can be
    reached and lets us do it; raises FreshRefused otherwise, with nothing changed."""
    import psycopg
    from psycopg import sql

    def connect(store: PostgresStore, dbname: str) -> psycopg.Connection:
        return psycopg.connect(
            host=store.host,
            port=store.port,
            user=store.user,
            password=store.password,
            dbname=dbname,
            autocommit=True,
            connect_timeout=10,
        )

    for store in stores:  # every server reachable, and allowed, before anything is dropped
        try:
            with connect(store, "postgres") as conn:
                row = conn.execute(
                    "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
                ).fetchone()
        except psycopg.Error as error:
            raise FreshRefused(
                f"--fresh cannot reach PostgreSQL to clear {store.describe()}: {_first_line(error)}. "
                "Nothing was deleted; start PostgreSQL (or clear that database yourself), "
                "or run without --fresh."
            ) from None
        if not store.schema and not (row and row[0]):
            raise FreshRefused(
                f"--fresh cannot clear {store.describe()}: user {store.user} may not drop and create "
                "databases. Nothing was deleted; clear it yourself, or run without --fresh."
            )
    done = []
    for store in stores:
        try:
            if store.schema:
                with connect(store, store.dbname) as conn:
                    conn.execute(
                        sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(store.schema))
                    )
                    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(store.schema)))
            else:
                with connect(store, "postgres") as conn:
                    name = sql.Identifier(store.dbname)
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
        except psycopg.Error as error:
            raise FreshRefused(f"--fresh could not clear {store.describe()}: {_first_line(error)}") from None
        done.append(f"cleared PostgreSQL {store.describe()}")
    return done


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
