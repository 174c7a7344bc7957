"""The sender against a real SMTP server (aiosmtpd, over sockets): delivered once, retried,
parked, withdrawn, over STARTTLS and implicit TLS. The sender, its store and its read model
run in this process; no Kafka is involved (events reach the notifier in other tests)."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import uuid
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from nacl.public import PrivateKey

from backbone.credentials import seal
from backbone.eventstore import store_env
from backbone.follower import read_log
from backbone.personal import Personal, Vault
from backbone.readmodel import Projection, ReadModel
from backbone.settings import StoreSettings
from deploy.local.mailcatcher import MailCatcher
from services.notifier import views
from services.notifier.application import Notifier
from services.notifier.domainmodel import CUSTOMER, PARKED, RETRYING, SENT, STAFF, WITHDRAWN, Email
from services.notifier.rendering import Renderer
from services.notifier.sender import Sender
from services.notifier.settings import NotifierSettings
from services.notifier.smtp import Mailer

pytestmark = pytest.mark.integration


class Harness:
    """A notifier's delivery side: store, read model, projection and sender, on an SMTP port."""

    def __init__(self, root: Path, smtp_port: int, store: StoreSettings | None = None, **settings):
        root.mkdir(parents=True, exist_ok=True)
        self.settings = NotifierSettings(
            smtp_port=smtp_port,
            data_dir=root,
            retry_base_seconds=0.3,
            retry_max_seconds=1,
            sending_lease_seconds=20,
            smtp_timeout_seconds=5,
            **settings,
        )
        store = store or StoreSettings(kind="sqlite", data_dir=root)
        self.vault = Vault(store.vault_url("notifier"), "notifier")
        self.notifier = Notifier(
            env=store_env(store, "notifier"), vault=self.vault, policy=self.settings.delivery_policy()
        )
        self.read_model = ReadModel(store.views_url("notifier"), views.metadata)
        self.read_model.create()
        self.projection = Projection(
            self.notifier, self.read_model, "notifier.views", views.projector(self.vault)
        )
        key = PrivateKey.generate()
        self.public_key = bytes(key.public_key)
        self.sender = Sender(
            self.notifier,
            self.read_model,
            self.projection,
            Mailer(self.settings),
            Renderer(self.settings.mail_from),
            bytes(key),
            batch_size=self.settings.send_batch_size,
            connections=self.settings.smtp_connections,
        )

    def queue(self, address: str | None, template: str = "welcome", data=None, audience=CUSTOMER) -> Email:
        subject = uuid.uuid4()
        email = Email(
            source_event_id=uuid.uuid4(),
            template=template,
            tenant_id="acme",
            audience=audience,
            recipient=self.vault.personal(subject, address) if address else None,
            language="en",
            data=data if data is not None else {"name": Personal(subject, "Jo")},
            account_id=subject,
            booking_id=None,
            erase_recipient_when_done=False,
        )
        self.notifier.save(email)
        return email

    def status(self, email_id: uuid.UUID) -> str:
        return self.notifier.email(email_id).status

    async def until(self, email_id: uuid.UUID, *statuses: str, patience: float = 30) -> Email:
        deadline = asyncio.get_running_loop().time() + patience
        while self.status(email_id) not in statuses:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{email_id} still {self.status(email_id)}, not {statuses}")
            await asyncio.sleep(0.05)
        return self.notifier.email(email_id)

    @asynccontextmanager
    async def running(self):
        tasks = [asyncio.create_task(self.projection.run()), asyncio.create_task(self.sender.run())]
        try:
            yield self
        finally:
            self.projection.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.notifier.close()
            self.read_model.close()


async def test_each_email_is_delivered_once_with_its_message_id(tmp_path, mail_server):
    harness = Harness(tmp_path, mail_server.port)
    async with harness.running():
        queued = [harness.queue(f"guest{i}@example.com") for i in range(30)]
        for email in queued:
            await harness.until(email.id, SENT)
        await asyncio.sleep(0.5)  # anything sent twice would show now
        with harness.read_model.engine.connect() as conn:
            row = views.email_row(conn, queued[-1].id)
    assert sorted(m.rcpt_tos[0] for m in mail_server.messages) == sorted(
        f"guest{i}@example.com" for i in range(30)
    )
    assert {m.message["Message-ID"] for m in mail_server.messages} == {e.message_id for e in queued}
    assert row["status"] == SENT and row["subject"] == "Welcome to Bookings" and row["sent_at"]


async def test_a_temporary_refusal_is_retried_with_backoff_until_accepted(tmp_path, mail_server):
    mail_server.fail_recipient("later@example.com", temporary=True)
    harness = Harness(tmp_path, mail_server.port)
    async with harness.running():
        email = harness.queue("later@example.com")
        failed = await harness.until(email.id, RETRYING)
        assert failed.last_error.startswith("recipient refused: 451")
        mail_server.accept_recipient("later@example.com")
        sent = await harness.until(email.id, SENT)
    assert sent.attempts >= 2
    assert len(mail_server.messages_to("later@example.com")) == 1


async def test_a_permanent_refusal_is_parked_with_the_reason_and_an_operator_can_retry_it(
    tmp_path, mail_server
):
    mail_server.fail_recipient("nobody@example.com")  # 550
    harness = Harness(tmp_path, mail_server.port)
    async with harness.running():
        email = harness.queue("nobody@example.com")
        parked = await harness.until(email.id, PARKED)
        assert parked.attempts == 1 and "550 5.1.1 Mailbox unavailable" in parked.last_error
        assert "nobody@example.com" not in parked.last_error  # replies are stored without addresses
        mail_server.accept_recipient("nobody@example.com")
        harness.notifier.retry(email.id, "operator:ops-1")
        await harness.until(email.id, SENT)
        [retry] = [e for e in harness.notifier.events.get(email.id) if type(e).__name__ == "RetryRequested"]
        assert retry.by == "operator:ops-1"
    assert len(mail_server.messages_to("nobody@example.com")) == 1


async def test_a_server_that_is_down_delays_the_emails_and_loses_none(tmp_path, mail_server):
    mail_server.stop()
    harness = Harness(tmp_path, mail_server.port)
    async with harness.running():
        queued = [harness.queue(f"wait{i}@example.com") for i in range(10)]
        for email in queued:
            failed = await harness.until(email.id, RETRYING)
            assert failed.last_error.startswith("cannot connect to the SMTP server")
        await asyncio.sleep(1.5)  # a few more attempts against the closed port
        mail_server.start()
        for email in queued:
            await harness.until(email.id, SENT)
        await asyncio.sleep(0.5)
    assert sorted(m.rcpt_tos[0] for m in mail_server.messages) == sorted(
        f"wait{i}@example.com" for i in range(10)
    )


async def test_nothing_is_sent_to_an_erased_recipient_or_with_an_expired_link(tmp_path, mail_server):
    harness = Harness(tmp_path, mail_server.port)
    erased = harness.queue("erased@example.com")
    harness.notifier.erase_subject(erased.recipient.subject_id)
    expired = harness.queue(
        "late@example.com",
        template="magic_link",
        data={
            "name": "Jo",
            "sealed_link": seal(harness.public_key, "https://accounts.example/magic?token=x"),
            "expires_at": datetime.now(UTC) - timedelta(minutes=1),
        },
    )
    fine = harness.queue("fine@example.com")
    async with harness.running():
        withdrawn = await harness.until(erased.id, WITHDRAWN)
        assert withdrawn.last_error == "the recipient's personal data was erased"
        withdrawn = await harness.until(expired.id, WITHDRAWN)
        assert withdrawn.last_error == "the link expired before the email could be sent"
        await harness.until(fine.id, SENT)
    assert [m.rcpt_tos[0] for m in mail_server.messages] == ["fine@example.com"]


async def test_a_staff_notice_without_an_address_waits_parked_for_one(tmp_path, mail_server):
    harness = Harness(tmp_path, mail_server.port)
    async with harness.running():
        notice = harness.queue(None, template="welcome", audience=STAFF)
        parked = await harness.until(notice.id, PARKED)
        assert "no staff notification address" in parked.last_error
        harness.notifier.change_branding("acme", {"staff_email": "desk@acme.example"}, "staff:api")
        harness.notifier.retry(notice.id, "staff:api", tenant_id="acme")
        await harness.until(notice.id, SENT)
    assert [m.rcpt_tos[0] for m in mail_server.messages] == ["desk@acme.example"]


async def test_an_email_that_cannot_be_rendered_is_parked_and_the_batch_goes_on(tmp_path, mail_server):
    harness = Harness(tmp_path, mail_server.port)
    broken = harness.queue("broken@example.com", template="booking_cancelled", data={"name": "Jo"})
    fine = harness.queue("fine@example.com")
    async with harness.running():
        parked = await harness.until(broken.id, PARKED)
        assert parked.last_error.startswith("cannot render the email: UndefinedError")
        await harness.until(fine.id, SENT)
    assert [m.rcpt_tos[0] for m in mail_server.messages] == ["fine@example.com"]


# ------------------------------------------------------------------------------------ TLS


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA, and a certificate it signed for 127.0.0.1 (as a mail server's)."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test mail CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_file, cert_file, key_file


@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_delivery_over_tls_verifies_the_servers_certificate(tmp_path, mode):
    ca_file, cert_file, key_file = _certificates(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_file, key_file)
    catcher = MailCatcher(port=0, tls=server_context, implicit_tls=mode == "tls").start()
    try:
        trusting = Harness(
            tmp_path / "trusting",
            catcher.port,
            smtp_tls=mode,
            smtp_ca_file=ca_file,
            smtp_username="notifier",
            smtp_password="secret-password",
        )
        async with trusting.running():
            email = trusting.queue("tls@example.com")
            await trusting.until(email.id, SENT)
        assert [m.rcpt_tos[0] for m in catcher.messages] == ["tls@example.com"]

        # Without the CA, the server's certificate is not trusted: nothing is sent in the clear.
        distrusting = Harness(tmp_path / "distrusting", catcher.port, smtp_tls=mode)
        async with distrusting.running():
            email = distrusting.queue("never@example.com")
            failed = await distrusting.until(email.id, RETRYING)
        assert "CERTIFICATE_VERIFY_FAILED" in failed.last_error
        assert [m.rcpt_tos[0] for m in catcher.messages] == ["tls@example.com"]
    finally:
        catcher.stop()


# ------------------------------------------------------------ several senders on one store


def _postgres_store(postgres) -> StoreSettings:
    from pydantic import SecretStr

    prefix = f"senders_{uuid.uuid4().hex[:8]}"  # POSTGRES_DBNAME: the notifier's is <prefix>_notifier
    postgres.create_database(f"{prefix}_notifier")
    return StoreSettings(
        kind="postgres",
        postgres_host=postgres.host,
        postgres_port=postgres.port,
        postgres_user=postgres.user,
        postgres_password=SecretStr(postgres.password),
        postgres_dbname=prefix,
    )


async def test_due_rows_claimed_by_one_sender_are_skipped_by_another(tmp_path, postgres):
    store = _postgres_store(postgres)
    harness = Harness(tmp_path / "one", 2525, store=store)
    queued = [harness.queue(f"guest{i}@example.com") for i in range(6)]
    harness.projection.apply(read_log(harness.notifier, 0, 1000))
    now = harness.notifier.clock()
    with harness.read_model.engine.begin() as first, harness.read_model.engine.begin() as second:
        mine = views.due(first, now, 4, skip_locked=True)  # locked until `first` ends
        theirs = views.due(second, now, 4, skip_locked=True)
    assert len(mine) == 4 and len(theirs) == 2 and not set(mine) & set(theirs)
    assert set(mine) | set(theirs) == {e.id for e in queued}
    harness.notifier.close()
    harness.read_model.close()


async def test_two_senders_share_the_queue_and_attempt_each_email_once(tmp_path, postgres, mail_server):
    """Two instances of the notifier on one PostgreSQL database: one projection (the leader's),
    two senders claiming disjoint batches. Every email is attempted once and delivered once."""
    from backbone.leadership import AdvisoryLock, postgres_conninfo

    store = _postgres_store(postgres)
    instances = [
        Harness(tmp_path / name, mail_server.port, store=store, send_batch_size=5) for name in ("a", "b")
    ]
    for harness in instances:
        harness.projection.lead_with(AdvisoryLock(postgres_conninfo(store, "notifier"), "notifier/views"))
        harness.projection.poll_interval = 0.05
    claimed: list[list[uuid.UUID]] = [[], []]
    for index, harness in enumerate(instances):
        start = harness.notifier.start_attempts

        def recording(ids, start=start, log=claimed[index]):
            emails = start(ids)
            log.extend(e.id for e in emails)
            return emails

        harness.notifier.start_attempts = recording
    queued = [instances[i % 2].queue(f"guest{i}@example.com") for i in range(40)]
    async with instances[0].running(), instances[1].running():
        for email in queued:
            await instances[0].until(email.id, SENT, patience=60)
        await asyncio.sleep(0.5)  # anything sent twice would show now
        attempts = [instances[1].notifier.email(e.id).attempts for e in queued]
    assert not set(claimed[0]) & set(claimed[1])  # disjoint claims
    assert sorted(claimed[0] + claimed[1]) == sorted(e.id for e in queued)
    assert attempts == [1] * 40
    assert sorted(m.message["Message-ID"] for m in mail_server.messages) == sorted(
        e.message_id for e in queued
    )
