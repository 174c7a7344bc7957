"""The test infrastructure itself, against the real things: a Kafka 4.x broker, PostgreSQL,
the SMTP mail catcher (and its web UI), and the no-orphan guarantee of LocalKafka."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from deploy.local.kafka import LocalKafka, new_cluster_id, render_server_properties
from deploy.local.mailcatcher import MailCatcher, create_app
from deploy.local.postgres import LocalPostgres, PostgresParams

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------- kafka helpers


async def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        for i, v in enumerate(values):
            await producer.send_and_wait(topic, v, key=str(i).encode())
    finally:
        await producer.stop()


async def consume(
    bootstrap: str,
    topic: str,
    expected: int,
    *,
    group_id: str | None = None,
    isolation_level: str = "read_uncommitted",
    timeout: float = 30,  # noqa: ASYNC109
    settle: float = 0.0,
) -> list[bytes]:
    """Read until ``expected`` records arrived (then ``settle`` s more, to catch extras);
    commit the group's offsets if ``group_id``."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level=isolation_level,
    )
    await consumer.start()
    out: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=300)
            out.extend(r.value for recs in batches.values() for r in recs)
        settle_until = time.monotonic() + settle
        while time.monotonic() < settle_until:
            batches = await consumer.getmany(timeout_ms=200)
            out.extend(r.value for recs in batches.values() for r in recs)
        if group_id is not None:
            await consumer.commit()
    finally:
        await consumer.stop()
    return out


async def committed_offset(bootstrap: str, topic: str, group_id: str) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id)
    await consumer.start()
    try:
        return await consumer.committed(TopicPartition(topic, 0))
    finally:
        await consumer.stop()


# --------------------------------------------------------------------------- kafka


def test_server_properties_template_has_no_inline_comments(tmp_path: Path) -> None:
    """Java .properties have no inline comments: 'x=1  # note' would set x to '1  # note'."""
    text = render_server_properties(19092, 19093, tmp_path / "data")
    settings = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert settings, text
    for line in settings:
        assert "#" not in line, line
        assert "$" not in line, line
    props = dict(ln.split("=", 1) for ln in settings)
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["log.cleaner.backoff.ms"] == "1000"
    cid = new_cluster_id()
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", cid)


async def test_idempotent_producer_and_consumer_group(kafka_bootstrap_servers: str) -> None:
    bootstrap = kafka_bootstrap_servers
    topic, group = unique("t-idem"), unique("g")
    await create_topic(bootstrap, topic)
    first = [f"m{i}".encode() for i in range(20)]
    await produce(bootstrap, topic, first)

    assert await consume(bootstrap, topic, 20, group_id=group) == first
    assert await committed_offset(bootstrap, topic, group) == 20

    # The group resumes after its committed offset: only the new records arrive.
    more = [f"n{i}".encode() for i in range(5)]
    await produce(bootstrap, topic, more)
    assert await consume(bootstrap, topic, 5, group_id=group, settle=0.5) == more


async def test_transactional_producer_commit_and_abort(kafka_bootstrap_servers: str) -> None:
    """Needs transaction.state.log.replication.factor=1 / min.isr=1 on a single broker."""
    bootstrap = kafka_bootstrap_servers
    topic = unique("t-txn")
    await create_topic(bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=unique("tx"))
    await producer.start()
    try:
        async with producer.transaction():
            for i in range(3):
                await producer.send_and_wait(topic, f"committed-{i}".encode())
        await producer.begin_transaction()
        for i in range(2):
            await producer.send_and_wait(topic, f"aborted-{i}".encode())
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed-3")
    finally:
        await producer.stop()

    committed = await consume(bootstrap, topic, 4, isolation_level="read_committed", settle=0.5)
    assert committed == [b"committed-0", b"committed-1", b"committed-2", b"committed-3"]
    everything = await consume(bootstrap, topic, 6, settle=0.5)
    assert sorted(everything) == sorted([*committed, b"aborted-0", b"aborted-1"])


async def _restart_keeps_data(local_kafka: LocalKafka, *, crash: bool) -> None:
    bootstrap = local_kafka.bootstrap_servers
    topic, group = unique("t-restart"), unique("g")
    await create_topic(bootstrap, topic)
    values = [f"v{i}".encode() for i in range(10)]
    await produce(bootstrap, topic, values)
    assert await consume(bootstrap, topic, 10, group_id=group) == values

    old_pid = local_kafka.pid
    if crash:
        local_kafka.kill()
    after = await asyncio.to_thread(local_kafka.restart)
    assert after == bootstrap
    assert local_kafka.pid != old_pid
    assert local_kafka.is_running

    # Records and the group's committed offset survived; the broker takes new writes.
    assert await consume(bootstrap, topic, 10, settle=0.3) == values
    assert await committed_offset(bootstrap, topic, group) == 10
    await produce(bootstrap, topic, [b"after-restart"])
    assert await consume(bootstrap, topic, 1, group_id=group, settle=0.3) == [b"after-restart"]


async def test_broker_clean_restart_keeps_data_and_address(local_kafka: LocalKafka) -> None:
    await _restart_keeps_data(local_kafka, crash=False)


async def test_broker_kill9_restart_keeps_data_and_address(local_kafka: LocalKafka) -> None:
    await _restart_keeps_data(local_kafka, crash=True)


def test_no_orphan_jvm_when_python_is_killed(local_kafka: LocalKafka) -> None:
    """SIGKILL the Python process that owns a LocalKafka: the watchdog kills the JVM and
    removes its temporary work dir."""
    code = (
        "from deploy.local.kafka import LocalKafka\n"
        f"k = LocalKafka(cache_root={str(local_kafka.cache_root)!r})\n"
        "k.start()\n"
        "print('READY', k.pid, k.work_dir, flush=True)\n"
        "import time; time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = ""
        deadline = time.monotonic() + 90
        while not line.startswith("READY") and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        assert line.startswith("READY"), f"child did not start a broker: {line!r}"
        _, pid_s, work_dir = line.split(maxsplit=2)
        jvm_pid, work = int(pid_s), Path(work_dir.strip())
        assert _alive(jvm_pid)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 20
    while _alive(jvm_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(jvm_pid), "the broker JVM outlived its owner"
    while work.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not work.exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


# --------------------------------------------------------------------------- postgres


def test_postgres_create_database_and_query(postgres: PostgresParams) -> None:
    import psycopg
    import sqlalchemy

    name = unique("t_pg").replace("-", "_")
    dsn = postgres.create_database(name)
    try:
        assert dsn == postgres.dsn(name)
        with psycopg.connect(dsn, autocommit=True) as conn:
            version = conn.execute("SHOW server_version_num").fetchone()[0]
            assert int(version) >= 150000
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, name text NOT NULL)")
            conn.execute("INSERT INTO t VALUES (1, 'ada'), (2, 'grace')")
            rows = conn.execute("SELECT name FROM t ORDER BY id").fetchall()
            assert rows == [("ada",), ("grace",)]
        engine = sqlalchemy.create_engine(postgres.sqlalchemy_url(name))
        try:
            with engine.connect() as c:
                assert c.execute(sqlalchemy.text("SELECT count(*) FROM t")).scalar() == 2
        finally:
            engine.dispose()
    finally:
        postgres.drop_database(name)
    with postgres.connect() as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchall()
        assert found == []


def test_postgres_kill9_and_restart_keeps_committed_data(local_postgres: LocalPostgres) -> None:
    params = local_postgres.params
    name = unique("t_crash").replace("-", "_")
    params.create_database(name)
    try:
        with params.connect(name) as conn:
            conn.execute("CREATE TABLE t (v int)")
            conn.execute("INSERT INTO t VALUES (42)")
        local_postgres.kill()
        assert not params.ping()
        assert local_postgres.restart() == params
        with params.connect(name) as conn:
            assert conn.execute("SELECT v FROM t").fetchall() == [(42,)]
        local_postgres.restart()  # clean (pg_ctl stop -m fast) restart
        with params.connect(name) as conn:
            assert conn.execute("SELECT v FROM t").fetchall() == [(42,)]
    finally:
        params.drop_database(name)


# --------------------------------------------------------------------------- mail


def make_message(to: str = "alice@example.com", subject: str = "Verify your email") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Booking <no-reply@booking.test>"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content("Hello!\nConfirm: http://127.0.0.1:8001/verify?token=abc&x=1\n")
    msg.add_alternative(
        "<p>Hello! <a href='http://127.0.0.1:8001/verify?token=abc&amp;x=1'>Confirm</a></p>",
        subtype="html",
    )
    return msg


async def test_mail_catcher_receives_message(mail_server: MailCatcher) -> None:
    await aiosmtplib.send(
        make_message(to="Alice <alice@example.com>"),
        hostname="127.0.0.1",
        port=mail_server.port,
        sender="bounces@booking.test",
        recipients=["alice@example.com", "audit@booking.test"],
    )
    msg = await mail_server.wait_for_async(lambda m: "alice@example.com" in m.rcpt_tos, 5)
    assert msg.mail_from == "bounces@booking.test"
    assert msg.rcpt_tos == ("alice@example.com", "audit@booking.test")
    assert msg.subject == "Verify your email"
    assert msg.to == "Alice <alice@example.com>"
    assert "Confirm:" in (msg.text or "")
    assert "<a href" in (msg.html or "")
    assert msg.links == ["http://127.0.0.1:8001/verify?token=abc&x=1"]
    assert b"Subject: Verify your email" in msg.raw
    assert msg.received_at.tzinfo is not None
    assert msg.path is not None
    assert msg.path.read_bytes() == msg.raw
    assert mail_server.messages_to("AUDIT@booking.test") == [msg]
    assert mail_server.messages_to("nobody@example.com") == []
    # also the blocking variant, from a thread
    assert await asyncio.to_thread(mail_server.wait_for, None, 1) == msg
    mail_server.clear()
    assert mail_server.messages == []
    with pytest.raises(TimeoutError):
        mail_server.wait_for(timeout=0.1)


async def test_mail_catcher_permanent_and_temporary_failures(mail_server: MailCatcher) -> None:
    send = dict(hostname="127.0.0.1", port=mail_server.port)
    mail_server.fail_recipient("bounce@example.com")  # permanent 550
    mail_server.fail_recipient("later@example.com", temporary=True)  # 451

    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as perm:
        await aiosmtplib.send(make_message("bounce@example.com"), **send)
    assert [r.code for r in perm.value.recipients] == [550]

    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as temp:
        await aiosmtplib.send(make_message("later@example.com"), **send)
    assert [r.code for r in temp.value.recipients] == [451]

    # Mixed: delivered to the good recipient, the bad one is reported.
    errors, _ = await aiosmtplib.send(
        make_message("ok@example.com"), recipients=["ok@example.com", "later@example.com"], **send
    )
    assert errors["later@example.com"].code == 451
    assert [m.rcpt_tos for m in mail_server.messages] == [("ok@example.com",)]

    mail_server.fail_all()  # "the mail server has a problem"
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await aiosmtplib.send(make_message("ok@example.com"), **send)
    mail_server.clear_failures()
    await aiosmtplib.send(make_message("later@example.com"), **send)
    assert len(mail_server.messages_to("later@example.com")) == 1


async def test_mail_catcher_down_for_a_while(mail_server: MailCatcher) -> None:
    port = mail_server.port
    await aiosmtplib.send(make_message(), hostname="127.0.0.1", port=port)
    mail_server.stop()
    assert not mail_server.is_running
    with pytest.raises(aiosmtplib.SMTPConnectError):
        await aiosmtplib.send(make_message(), hostname="127.0.0.1", port=port, timeout=2)
    mail_server.start()
    assert mail_server.port == port  # clients keep their configuration
    await aiosmtplib.send(make_message(subject="again"), hostname="127.0.0.1", port=port)
    assert [m.subject for m in mail_server.messages] == ["Verify your email", "again"]


async def test_mail_catcher_web_ui_and_json_api(mail_server: MailCatcher) -> None:
    await aiosmtplib.send(make_message(subject="First"), hostname="127.0.0.1", port=mail_server.port)
    await aiosmtplib.send(
        make_message(subject="Second <b>"),
        hostname="127.0.0.1",
        port=mail_server.port,
        username="any",
        password="thing",
    )
    transport = httpx.ASGITransport(app=create_app(mail_server))
    async with httpx.AsyncClient(transport=transport, base_url="http://ui") as ui:
        api = (await ui.get("/api/messages")).json()
        assert [m["subject"] for m in api] == ["Second <b>", "First"]  # newest first
        assert api[0]["links"] == ["http://127.0.0.1:8001/verify?token=abc&x=1"]
        assert (await ui.get("/api/messages", params={"to": "nobody@x.org"})).json() == []

        index = (await ui.get("/")).text
        assert index.index("Second &lt;b&gt;") < index.index("First")  # escaped, newest first
        first_id = api[1]["id"]
        page = (await ui.get(f"/messages/{first_id}")).text
        assert "<iframe sandbox=" in page
        assert "allow-scripts" not in page
        assert 'href="http://127.0.0.1:8001/verify?token=abc&amp;x=1"' in page
        html_part = await ui.get(f"/messages/{first_id}/html")
        assert html_part.text.startswith('<base target="_blank">')
        assert "script-src 'none'" in html_part.headers["content-security-policy"]
        raw = await ui.get(f"/messages/{first_id}/raw")
        assert raw.headers["content-type"].startswith("message/rfc822")
        assert b"Subject: First" in raw.content
        assert (await ui.get("/messages/999")).status_code == 404
        assert (await ui.delete("/api/messages")).status_code == 204
        assert (await ui.get("/api/messages")).json() == []
