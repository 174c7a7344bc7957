"""Followers coordinated across instances on PostgreSQL: one leader, takeover, fencing.

Two `AdvisoryLock`s on one real database stand for two instances of a service. Killing the
leader's session (`pg_terminate_backend`: what the server sees when a process dies with
kill -9) frees the lock, and the other takes over; a stalled ex-leader that wakes up after the
takeover cannot commit a position or a projection batch.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from pydantic import SecretStr

from backbone.credentials import load_or_create_sealing_keys
from backbone.eventstore import LeadershipLost, PositionChanged, Tracking, store_env
from backbone.follower import PositionMoved, read_log
from backbone.leadership import AdvisoryLock, postgres_conninfo
from backbone.outbox import OutboxRelay
from backbone.personal import Vault
from backbone.readmodel import Projection, ReadModel
from backbone.settings import StoreSettings
from backbone.signing import Keyring, create_key
from services.accounts import views
from services.accounts.application import Accounts, AccountsConfig
from services.accounts.integration import translator

pytestmark = pytest.mark.integration


@pytest.fixture
def store(postgres):
    prefix = f"leaders_{uuid.uuid4().hex[:8]}"  # POSTGRES_DBNAME: <prefix>_accounts
    database = f"{prefix}_accounts"
    postgres.create_database(database)
    yield StoreSettings(
        kind="postgres",
        postgres_host=postgres.host,
        postgres_port=postgres.port,
        postgres_user=postgres.user,
        postgres_password=SecretStr(postgres.password),
        postgres_dbname=prefix,
    )
    postgres.drop_database(database)


@pytest.fixture
def app(store, tmp_path):
    _, public = load_or_create_sealing_keys(tmp_path / "sealing.key")
    app = Accounts(
        AccountsConfig("https://accounts.example.test", public),
        env=store_env(store, "accounts"),
        vault=Vault(store.vault_url("accounts"), "accounts"),
    )
    app.change_settings("acme", {"customer_logins_enabled": True})
    yield app
    app.close()


def claim(app, count):
    for _ in range(count):
        app.claim_account("acme", f"{uuid.uuid4().hex[:10]}@example.com", "Ada", "en")


def lock(store, name="accounts/accounts.outbox", **kwargs):
    kwargs.setdefault("retry_interval", 0.1)
    kwargs.setdefault("check_interval", 0.1)
    return AdvisoryLock(postgres_conninfo(store, "accounts"), name, **kwargs)


def kill_session(postgres, leader: AdvisoryLock) -> None:
    pid = leader._conn.info.backend_pid
    with postgres.connect() as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


async def until(condition, seconds=20.0):
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_one_leader_and_a_takeover_within_seconds_when_it_dies(store, postgres):
    stopping = asyncio.Event()
    first, second = lock(store), lock(store)
    assert await first.acquire(stopping)
    first_token = first.lease[1]
    contender = asyncio.create_task(second.acquire(stopping))
    await asyncio.sleep(0.5)
    assert not contender.done() and not second.held  # standing by while the leader lives

    kill_session(postgres, first)  # the leading process died
    assert await asyncio.wait_for(contender, timeout=10)
    assert second.held and second.lease[1] == first_token + 1  # a new fencing token
    await until(lambda: not first.held)  # the ex-leader's watchdog notices too
    await second.release()
    await first.release()


async def test_different_followers_lead_independently(store):
    stopping = asyncio.Event()
    relay, projection = lock(store, "accounts/accounts.outbox"), lock(store, "accounts/accounts.views")
    assert await relay.acquire(stopping)
    assert await asyncio.wait_for(projection.acquire(stopping), timeout=5)
    await relay.release()
    await projection.release()


async def test_a_stalled_ex_leader_cannot_commit_a_position(store, postgres, app):
    stopping = asyncio.Event()
    old, new = lock(store), lock(store)
    assert await old.acquire(stopping)
    stale_lease = old.lease
    await asyncio.to_thread(app.record_position, Tracking("accounts.outbox", 5), 0, stale_lease)

    kill_session(postgres, old)  # it stalls; the server drops its session; another leads
    assert await asyncio.wait_for(new.acquire(stopping), timeout=10)

    with pytest.raises(LeadershipLost):  # it wakes up and tries to commit under its old lease
        await asyncio.to_thread(app.record_position, Tracking("accounts.outbox", 9), 5, stale_lease)
    assert app.position("accounts.outbox") == 5
    await asyncio.to_thread(app.record_position, Tracking("accounts.outbox", 9), 5, new.lease)
    assert app.position("accounts.outbox") == 9
    with pytest.raises(PositionChanged):  # compare-and-set: only from where the batch started
        await asyncio.to_thread(app.record_position, Tracking("accounts.outbox", 12), 5, new.lease)
    await new.release()
    await old.release()


async def test_a_stalled_ex_leader_cannot_write_to_the_read_model(store, postgres, app):
    claim(app, 3)
    read_model = ReadModel(store.views_url("accounts"), views.metadata)
    read_model.create()
    projection = Projection(app, read_model, "accounts.views", views.projector(app.vault))
    stopping = asyncio.Event()
    old, new = lock(store, "accounts/accounts.views"), lock(store, "accounts/accounts.views")
    assert await old.acquire(stopping)
    stale_lease = old.lease
    kill_session(postgres, old)
    assert await asyncio.wait_for(new.acquire(stopping), timeout=10)

    batch = read_log(app, 0, 100)
    with pytest.raises(PositionMoved):
        projection.apply(batch, 0, stale_lease)
    assert read_model.position("accounts.views") == 0
    projection.apply(batch, 0, new.lease)
    assert read_model.position("accounts.views") == batch[-1].position
    read_model.close()
    await new.release()
    await old.release()


async def test_two_relays_publish_each_event_once_and_the_survivor_takes_over(store, postgres, app, tmp_path):
    """Two instances' relays on one store: only the leader publishes; kill it, the other
    resumes from the stored position."""
    broker = KafkaBroker()
    seen: list[str] = []

    @broker.subscriber("accounts.events")
    async def capture(body: dict) -> None:
        seen.append(body["event_id"])

    relays = []
    signer = create_key(tmp_path / "bus", "accounts")  # what accounts signs its events with
    keyring = Keyring.load(tmp_path / "bus" / "trusted")
    async with TestKafkaBroker(broker):
        for _ in range(2):
            relay = OutboxRelay(app, broker, "accounts", translator(app), signer=signer, keyring=keyring)
            relay.poll_interval = 0.05
            relay.lead_with(lock(store))
            relays.append(relay)
        tasks = [asyncio.create_task(r.run()) for r in relays]
        await asyncio.to_thread(claim, app, 5)
        await until(lambda: len(seen) >= 5)
        leader = next(r for r in relays if r.leading)
        standby = next(r for r in relays if r is not leader)
        assert not standby.leading
        assert len(seen) == len(set(seen))  # one leader: each event published once

        # The leading process dies: its task ends without a word and the server drops its
        # session. Killing the session alone is not a death: the live ex-leader would reconnect
        # and could win the lock back before the standby's next try.
        tasks[relays.index(leader)].cancel()
        kill_session(postgres, leader.leadership)
        await until(lambda: standby.leading)
        await asyncio.to_thread(claim, app, 5)
        await until(lambda: len(seen) >= 10 and app.position("accounts.outbox") == app.head())
        for relay in relays:
            relay.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
    # Nothing lost. At the takeover, a batch the old leader published but could not commit
    # under its lease is published again, with the same event ids (consumers drop the copies).
    expected = {str(out.message.event_id) for out in relays[0].messages(read_log(app, 0, 10_000))}
    assert set(seen) == expected
