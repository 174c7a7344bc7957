"""Telling an outage from a bad message (backbone.faults): by type, by cause, then by asking."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
import sqlalchemy.exc
from eventsourcing.persistence import IntegrityError, OperationalError

from backbone.faults import StoreUnavailable, classify, is_conflict, is_infrastructure, probe_all


def _raised_from(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as e:
            raise outer from e
    except BaseException as wrapped:
        return wrapped


@pytest.mark.parametrize(
    ("error", "infrastructure"),
    [
        (sqlalchemy.exc.OperationalError("SELECT", {}, Exception("connection refused")), True),
        (sqlalchemy.exc.InterfaceError("SELECT", {}, Exception("closed")), True),
        (psycopg.OperationalError("server closed the connection"), True),
        (OperationalError("database is locked"), True),  # eventsourcing's
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (IntegrityError("version conflict"), False),  # a race with another writer, not an outage
        (sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate key")), False),
        (ValueError("bad amount"), False),
        (KeyError("line"), False),
        (_raised_from(RuntimeError("handler"), psycopg.OperationalError("gone")), True),
    ],
)
def test_errors_that_say_a_store_could_not_be_reached(error, infrastructure):
    assert is_infrastructure(error) is infrastructure


@pytest.mark.parametrize(
    ("error", "conflict"),
    [
        (IntegrityError("version conflict"), True),  # eventsourcing's
        (sqlalchemy.exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed")), True),
        (psycopg.errors.UniqueViolation("duplicate key value violates unique constraint"), True),
        (_raised_from(RuntimeError("handler"), sqlite3.IntegrityError("UNIQUE")), True),
        (sqlalchemy.exc.OperationalError("SELECT", {}, Exception("connection refused")), False),
        (ValueError("bad amount"), False),
    ],
)
def test_writes_that_lost_a_race_on_a_unique_key(error, conflict):
    assert is_conflict(error) is conflict


def test_an_unknown_failure_is_an_outage_only_if_a_store_does_not_answer():
    healthy: list[str] = []
    assert classify(ValueError("bad"), lambda: healthy) is None
    outage = classify(ValueError("bad"), lambda: ["vault (OperationalError: refused)"])
    assert isinstance(outage, StoreUnavailable) and "vault" in str(outage)

    def broken_probe() -> list[str]:
        raise RuntimeError("pool exhausted")

    assert isinstance(classify(ValueError("bad"), broken_probe), StoreUnavailable)
    known = psycopg.OperationalError("gone")
    assert classify(known, lambda: []) is known  # decided by type; the probe is not needed


def test_probes_report_each_store_that_fails():
    def down() -> None:
        raise ConnectionRefusedError("refused")

    assert probe_all({"event store": lambda: 1, "read model": down}) == [
        "read model (ConnectionRefusedError: refused)"
    ]
