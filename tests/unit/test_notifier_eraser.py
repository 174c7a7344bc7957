"""The notifier's eraser, in memory: every erasure decided in the log is carried out, and its
position is recorded with an erasure (or every few seconds), not after every batch.

A batch with nothing to erase leaves the stored position behind; a restart then reads those
batches again and finds nothing in them to erase, and nothing after them is skipped.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from backbone.eventstore import store_env
from backbone.readmodel import ReadModel
from backbone.settings import StoreSettings
from services.notifier import erasure, views
from services.notifier.application import Notifier
from services.notifier.directory import Customer
from services.notifier.erasure import Eraser


@pytest.fixture
def notifier():
    app = Notifier(env=store_env(StoreSettings(kind="memory"), "notifier"))
    yield app
    app.close()


@pytest.fixture
def read_model(tmp_path):
    model = ReadModel(f"sqlite+pysqlite:///{tmp_path / 'views.db'}", views.metadata)
    model.create()
    return model


def customer(notifier: Notifier) -> Customer:
    account = uuid.uuid4()
    found = Customer(account_id=account, tenant_id="lakeside", address=None, language=None)
    notifier.save(found)
    return found


async def until(condition, what: str) -> None:
    for _ in range(600):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within 12 s: {what}")


async def test_erasures_are_done_and_recorded_and_other_batches_only_move_in_memory(
    notifier, read_model, monkeypatch
):
    eraser = Eraser(notifier, read_model)
    eraser.poll_interval = 0.01
    running = asyncio.create_task(eraser.run())
    try:
        customer(notifier)
        await until(lambda: eraser.position == notifier.head(), "the eraser followed the log")
        assert (notifier.position(eraser.name) or 0) < notifier.head()  # not recorded: nothing to erase

        gone = customer(notifier)
        gone.redact(by="staff:s1")
        notifier.save(gone)
        erased = []
        monkeypatch.setattr(notifier, "erase_subject", erased.append)  # (the vault's: tested elsewhere)
        await until(lambda: erased == [gone.account_id], "the redacted account's key destroyed")
        await until(lambda: notifier.position(eraser.name) == notifier.head(), "recorded with the erasure")

        customer(notifier)
        head = notifier.head()
        await until(lambda: eraser.position == head, "followed")
        assert notifier.position(eraser.name) < head
        monkeypatch.setattr(erasure, "RECORD_EVERY_SECONDS", 0.0)  # as a few seconds later: when idle
        await until(lambda: notifier.position(eraser.name) == head, "recorded when idle")
    finally:
        eraser.stop()
        await running


async def test_a_restart_reads_again_what_was_not_recorded_and_skips_no_erasure(
    notifier, read_model, monkeypatch
):
    first = Eraser(notifier, read_model)
    first.poll_interval = 0.01
    running = asyncio.create_task(first.run())
    customer(notifier)
    await until(lambda: first.position == notifier.head(), "followed")
    first.stop()
    await running
    stored = notifier.position(first.name) or 0
    assert stored < notifier.head()

    gone = customer(notifier)  # decided while no eraser ran
    gone.redact(by="staff:s1")
    notifier.save(gone)
    erased = []
    monkeypatch.setattr(notifier, "erase_subject", erased.append)
    again = Eraser(notifier, read_model)
    again.poll_interval = 0.01
    running = asyncio.create_task(again.run())
    try:
        await until(lambda: notifier.position(again.name) == notifier.head(), "recorded after the restart")
        assert erased == [gone.account_id]
    finally:
        again.stop()
        await running
