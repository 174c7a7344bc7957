"""The three services as real OS processes, for end-to-end, crash and rebuild tests.

A `System` wires accounts, bookings and notifier to one Kafka broker under a topic namespace
of its own (so tests sharing the session's broker never see each other's messages), to one
SMTP server, and to SQLite files or PostgreSQL databases of their own. Each service can be
killed with SIGKILL and started again on the same port and store.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from backbone.credentials import load_or_create_sealing_keys, load_or_create_signing_key, public_path
from backbone.signing import Keyring, Signer, create_key
from deploy.local._proc import free_ports, spawn, tail, terminate_group

REPO = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "admin-token-for-tests-at-least-32-characters"
# Every test talks to the services from 127.0.0.1: the per-client rate limits are raised so
# that they do not add up across tests (tests of the limits set their own).
ALL_CAPABILITIES = ("place", "pay", "cancel", "modify", "statuses", "override", "act_for_customer")
GENEROUS_CLIENT_LIMITS = json.dumps(
    {
        f"{action}.client": "100000/hour"
        for action in ("claim", "verification", "magic_link", "password_reset", "login", "link")
    }
)


@dataclass
class ServiceProcess:
    name: str
    env: dict[str, str]
    port: int
    log: Path
    proc: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        self.proc = spawn(
            [sys.executable, "-m", f"services.{self.name}"],
            log_file=self.log,
            env={**os.environ, **self.env},
            cwd=REPO,
            grace=10,
        )
        return self

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready after {timeout}s:\n{self.output()}")

    def kill(self) -> None:
        """kill -9: no shutdown hook, no flush, nothing."""
        terminate_group(self.proc, sig=signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None:
            terminate_group(self.proc, sig=signal.SIGTERM, timeout=20)

    def output(self) -> str:
        return tail(self.log, 0, 6000)

    def errors(self) -> list[str]:
        """Log lines at error level or above from our code (the services log JSON lines).

        The Kafka client logs the conditions it retries on its own at error level (a leader
        not yet elected for a new topic, a coordinator not ready, a broker restarting); those
        are not ours, and our own code logs an error when a retry of its own fails."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines() if self.log.exists() else ():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            ours = not str(entry.get("logger", "")).startswith("aiokafka")
            if entry.get("level") in ("error", "critical") and ours:
                found.append(line)
        return found


@dataclass
class System:
    root: Path
    kafka: str
    smtp_port: int
    store: str = "sqlite"
    postgres: Any = None  # PostgresParams when store == "postgres"
    namespace: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")
    overrides: dict[str, dict[str, str]] = field(default_factory=dict)
    with_portal: bool = False  # also run services.portal; emailed links then point at it

    def __post_init__(self) -> None:
        ports = free_ports(4 if self.with_portal else 3)
        sealing_key = self.root / "notifier" / "sealing.key"
        _, notifier_public = load_or_create_sealing_keys(sealing_key)
        signing_key = self.root / "accounts" / "session-signing-key.pem"
        load_or_create_signing_key(signing_key)
        for name in ("accounts", "bookings", "notifier"):  # as `python -m deploy.keys` makes them
            create_key(self.bus_keys, name)
        common = {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka,
            "TOPIC_NAMESPACE": self.namespace,
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            "STORE": self.store,
        }
        specific = {
            "accounts": {
                "PUBLIC_BASE_URL": f"http://127.0.0.1:{ports[0]}",
                "NOTIFIER_PUBLIC_KEY": base64.b64encode(notifier_public).decode(),
                "ADMIN_API_TOKEN": ADMIN_TOKEN,
                "RATE_LIMITS": GENEROUS_CLIENT_LIMITS,
                "DEFERRED_PER_CLIENT": "100000",  # (like the limits: every test is 127.0.0.1)
                "SESSION_SIGNING_KEY_FILE": str(signing_key),
            },
            "bookings": {
                "SESSION_PUBLIC_KEY_FILE": str(public_path(signing_key)),
                "ADMIN_API_TOKEN": ADMIN_TOKEN,
            },
            "notifier": {
                "SMTP_HOST": "127.0.0.1",
                "SMTP_PORT": str(self.smtp_port),
                "SEALING_KEY_FILE": str(sealing_key),
            },
        }
        self.services: dict[str, ServiceProcess] = {}
        self.staff_keys: dict[str, str] = {}  # tenant -> API key of a staff member
        if self.with_portal:
            portal_url = f"http://127.0.0.1:{ports[3]}"
            specific["accounts"]["PUBLIC_BASE_URL"] = portal_url
            specific["notifier"]["PORTAL_URL"] = portal_url
            specific["portal"] = {
                "ACCOUNTS_URL": f"http://127.0.0.1:{ports[0]}",
                "BOOKINGS_URL": f"http://127.0.0.1:{ports[1]}",
                "NOTIFIER_URL": f"http://127.0.0.1:{ports[2]}",
            }
        for (name, extra), port in zip(specific.items(), ports, strict=True):
            env = {
                **common,
                **extra,
                "BUS_KEY_FILE": str(self.bus_keys / f"{name}.key"),
                "BUS_TRUSTED_KEYS_DIR": str(self.bus_keys / "trusted"),
                "HTTP_PORT": str(port),
                "DATA_DIR": str(self.root / name),
                **self.overrides.get(name, {}),
            }
            if self.store == "postgres" and name != "portal":  # the portal has no store
                database = f"{self.namespace}_{name}"
                self.postgres.create_database(database)
                env.update(
                    POSTGRES_HOST=self.postgres.host,
                    POSTGRES_PORT=str(self.postgres.port),
                    POSTGRES_USER=self.postgres.user,
                    POSTGRES_PASSWORD=self.postgres.password,
                    POSTGRES_DBNAME=self.namespace,  # a prefix: <namespace>_<service>
                )
            self.services[name] = ServiceProcess(name, env, port, self.root / f"{name}.log")

    @property
    def bus_keys(self) -> Path:
        return self.root / "keys" / "bus"

    def signer(self, service: str) -> Signer:
        """A service's bus key: what its messages are signed with, what opens keys sealed for it."""
        return Signer.load(service, self.bus_keys / f"{service}.key")

    def keyring(self) -> Keyring:
        return Keyring.load(self.bus_keys / "trusted")

    @property
    def accounts(self) -> ServiceProcess:
        return self.services["accounts"]

    @property
    def bookings(self) -> ServiceProcess:
        return self.services["bookings"]

    @property
    def notifier(self) -> ServiceProcess:
        return self.services["notifier"]

    @property
    def portal(self) -> ServiceProcess:
        return self.services["portal"]

    def topic(self, name: str) -> str:
        return f"{self.namespace}.{name}"

    def start(self, *names: str) -> System:
        chosen = [self.services[n] for n in (names or self.services)]
        for service in chosen:
            service.start()
        for service in chosen:
            service.wait_ready()
        if self.bookings in chosen:  # the publishers the tests' commands come from
            for name in TEST_PUBLISHERS:
                self.register_publisher(name, publisher(name).public_key)
        return self

    def register_publisher(
        self,
        name: str,
        public_key: bytes,
        tenants: Iterable[str] = ("*",),
        capabilities: Iterable[str] = ALL_CAPABILITIES,
    ) -> dict[str, Any]:
        """Register a command publisher's key with bookings, through its admin API."""
        response = httpx.post(
            f"{self.bookings.url}/v1/admin/publishers",
            headers=admin_headers(),
            json={
                "name": name,
                "public_key": base64.b64encode(public_key).decode(),
                "tenants": list(tenants),
                "capabilities": list(capabilities),
            },
            timeout=10,
        )
        assert response.status_code == 201, response.text
        return response.json()

    def stop(self) -> None:
        for service in self.services.values():
            service.stop()


# ------------------------------------------------------------------------------ the bus


async def publish(
    kafka: str, topic: str, messages: Iterable[tuple[bytes, bytes, dict[str, str]]], security: Any = None
) -> None:
    """Publish (key, value, headers) records as another service would (idempotent producer);
    on a secured cluster with `security` (a `KafkaSecurity`: whose principal it is)."""
    secured = security.for_aiokafka() if security is not None else {}
    producer = AIOKafkaProducer(bootstrap_servers=kafka, enable_idempotence=True, linger_ms=5, **secured)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=key, headers=[(k, v.encode()) for k, v in headers.items()])
            for key, value, headers in messages
        ]
        for future in futures:
            await future
    finally:
        await producer.stop()


async def read_topic(kafka: str, topic: str, security: Any = None) -> list[Any]:
    """Every record of a topic, from the beginning to its current end (as `security`'s
    principal on a secured cluster)."""
    secured = security.for_aiokafka() if security is not None else {}
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False, **secured)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[Any] = []

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            batch = await consumer.getmany(timeout_ms=1000)
            for recs in batch.values():
                records.extend(recs)
        return records
    finally:
        await consumer.stop()


def decode(records: Iterable[Any]) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in records]


def place_booking_command(
    tenant: str,
    email: str,
    *,
    booking_id: uuid.UUID | None = None,
    starts_in: timedelta = timedelta(days=7),
    paid: str = "0.00",
    status: str = "PEND",
    command_id: uuid.UUID | None = None,
    account_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    start = datetime.now(UTC) + starts_in
    booking_id = booking_id or uuid.uuid4()
    return {
        "command_type": "PlaceBooking",
        "schema_version": 1,
        "command_id": str(command_id or uuid.uuid4()),
        "issued_at": datetime.now(UTC).isoformat(),
        "issued_by": "storefront",
        "tenant_id": tenant,
        "correlation_id": str(uuid.uuid4()),
        "booking_id": str(booking_id),
        "booking_code": f"B-{booking_id.hex[:8].upper()}",
        "customer": {"email": email, "name": "Test Customer"},
        "account_id": str(account_id) if account_id else None,
        "lines": [
            {
                "kind": "item",
                "ref": "kayak-2p",
                "name": "Kayak for two",
                "starts_at": start.isoformat(),
                "ends_at": (start + timedelta(hours=3)).isoformat(),
                "quantity": 1,
                "unit_price": "80.00",
            },
            {
                "kind": "product",
                "ref": "lunch",
                "name": "Picnic lunch",
                "starts_at": start.isoformat(),
                "ends_at": (start + timedelta(hours=1)).isoformat(),
                "quantity": 2,
                "unit_price": "12.50",
            },
        ],
        "currency": "EUR",
        "status": status,
        "amount_paid": paid,
    }


def command_record(command: dict[str, Any]) -> tuple[bytes, bytes, dict[str, str]]:
    """A command as its publisher (`issued_by`) sends it: signed with its key."""
    return signed_command(command["booking_id"].encode(), json.dumps(command).encode())


TEST_PUBLISHERS: dict[str, Signer] = {}
"""The command publishers of the tests (their `issued_by`), registered by `System.start` for
every tenant and every capability; one key each for the whole test session."""


def publisher(name: str) -> Signer:
    if name not in TEST_PUBLISHERS:
        TEST_PUBLISHERS[name] = Signer.generate(name)
    return TEST_PUBLISHERS[name]


for _name in ("storefront", "backoffice"):
    publisher(_name)


def signed_command(key: bytes, body: bytes, issuer: str | None = None) -> tuple[bytes, bytes, dict[str, str]]:
    """(key, value, headers) of a command body, signed by its publisher (`issued_by`, or
    `issuer` for a body that does not say: malformed ones)."""
    if issuer is None:
        issuer = json.loads(body).get("issued_by", "storefront")
    return key, body, publisher(issuer).sign(body, {})


def wait_for(predicate: Any, timeout: float = 30, interval: float = 0.2, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def notifier_staff_headers(system: System, tenant: str) -> dict[str, str]:
    """`staff_headers`, once the notifier has heard of the key from accounts."""
    return admitted_by_notifier(system, tenant, staff_headers(system, tenant))


def admitted_by_notifier(system: System, tenant: str, headers: dict[str, str]) -> dict[str, str]:
    """Wait until the notifier accepts a staff key that accounts announced (on the bus: a
    moment after accounts issued it)."""

    def admitted() -> bool:
        url = f"{system.notifier.url}/v1/staff/tenants/{tenant}/branding"
        return httpx.get(url, headers=headers, timeout=10).status_code == 200

    wait_for(admitted, timeout=30, what="the notifier to accept the staff key")
    return headers


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def staff_headers(system: System, tenant: str) -> dict[str, str]:
    """The Authorization header of a staff member of `tenant` (added once per System)."""
    if tenant not in system.staff_keys:
        response = httpx.post(
            f"{system.accounts.url}/v1/admin/tenants/{tenant}/staff",
            headers=admin_headers(),
            json={"label": "tests"},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        system.staff_keys[tenant] = response.json()["api_key"]
    return {"Authorization": f"Bearer {system.staff_keys[tenant]}"}


def set_tenant_settings(system: System, tenant: str, **settings: Any) -> dict[str, Any]:
    response = httpx.patch(
        f"{system.accounts.url}/v1/staff/tenants/{tenant}/settings",
        headers=staff_headers(system, tenant),
        json=settings,
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()


@dataclass(frozen=True)
class Link:
    """A link the accounts service asked the notifier to email, opened as the notifier would."""

    event_type: str
    purpose: str
    url: str
    account_id: str
    email: str | None  # the address it goes to; None if its subject is erased

    @property
    def token(self) -> str:
        return self.url.split("token=", 1)[1]


def emailed_links(system: System, email: str | None = None) -> list[Link]:
    """Every link published on accounts.events (oldest first), opened with the notifier's
    sealing key and the accounts subject keys: what the customer at `email` was sent."""
    from backbone.credentials import unseal
    from backbone.personal import UnknownSubject, Vault
    from contracts.personal import SubjectKey

    private_key, _ = load_or_create_sealing_keys(system.root / "notifier" / "sealing.key")
    vault = Vault("sqlite+pysqlite:///:memory:", "test")
    for record in asyncio.run(read_topic(system.kafka, system.topic("accounts.subject-keys"))):
        vault.accept(opened_key(system, "notifier", SubjectKey.model_validate_json(record.value)))
    links = []
    for event in decode(asyncio.run(read_topic(system.kafka, system.topic("accounts.events")))):
        if "link" not in event:
            continue
        try:
            to = vault.open(event["email"])
        except (UnknownSubject, ValueError):  # its key is not on the topic (yet)
            to = None
        address = to.value if to is not None else None
        if email is None or address == email:
            purpose = (
                event.get("purpose")
                or {
                    "AccountClaimed": "verify_email"
                    if event.get("claimed_by") == "customer"
                    else "set_password",
                    "MagicLinkRequested": "magic_link",
                    "PasswordResetRequested": "password_reset",
                }[event["event_type"]]
            )
            url = unseal(private_key, event["link"])
            links.append(Link(event["event_type"], purpose, url, event["account_id"], address))
    return links


def wait_for_link(system: System, email: str, purpose: str, after: int = 0, timeout: float = 30) -> Link:
    """The newest link of `purpose` sent to `email`, once more than `after` of them exist."""

    def found() -> list[Link]:
        links = [link for link in emailed_links(system, email) if link.purpose == purpose]
        return links if len(links) > after else []

    return wait_for(found, timeout=timeout, what=f"a {purpose} link for {email}")[-1]


def verified_customer(
    system: System,
    mail_server: Any,
    tenant: str,
    email: str,
    password: str = "a-long-and-unguessable-passphrase",
) -> dict[str, str]:
    """Claim, verify through the link sent for the email (choosing the password there), log
    in: the customer's Authorization header. (The link is read from the bus, opened with the
    notifier's key, so this does not depend on the notifier running; `mail_server` is kept for
    callers that pass it.)"""
    response = httpx.post(
        f"{system.accounts.url}/v1/tenants/{tenant}/accounts",
        json={"email": email, "name": "Customer"},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    link = wait_for_link(system, email, "verify_email")
    verified = httpx.post(
        f"{system.accounts.url}/v1/email-verifications",
        json={"token": link.token, "password": password},
        timeout=10,
    )
    assert verified.status_code == 200, verified.text
    session = httpx.post(
        f"{system.accounts.url}/v1/tenants/{tenant}/sessions",
        json={"email": email, "password": password},
        timeout=10,
    )
    assert session.status_code == 200, session.text
    return {"Authorization": f"Bearer {session.json()['token']}"}


def open_store(system: System, name: str) -> Any:
    """The service's event store, opened from the test (read it after stopping the service)."""
    from backbone.eventstore import store_env
    from backbone.personal import Vault

    apps = {
        "bookings": ("services.bookings.application", "Bookings"),
        "notifier": ("services.notifier.application", "Notifier"),
    }
    env = system.services[name].env
    if name == "accounts":
        return _open_accounts(system, env)
    module, cls = apps[name]
    app_class = getattr(__import__(module, fromlist=[cls]), cls)
    store = _store_settings(system, env)
    return app_class(env=store_env(store, name), vault=Vault(store.vault_url(name), name))


def _store_settings(system: System, env: dict[str, str]) -> Any:
    from pydantic import SecretStr

    from backbone.settings import StoreSettings

    return StoreSettings(
        kind=system.store,
        data_dir=Path(env["DATA_DIR"]),
        postgres_host=env.get("POSTGRES_HOST", ""),
        postgres_port=int(env.get("POSTGRES_PORT", 0)),
        postgres_user=env.get("POSTGRES_USER", ""),
        postgres_password=SecretStr(env.get("POSTGRES_PASSWORD", "")),
        postgres_dbname=env.get("POSTGRES_DBNAME"),
    )


def _open_accounts(system: System, env: dict[str, str]) -> Any:
    from backbone.eventstore import store_env
    from backbone.personal import Vault
    from services.accounts.application import Accounts, AccountsConfig

    store = _store_settings(system, env)
    config = AccountsConfig(env["PUBLIC_BASE_URL"], base64.b64decode(env["NOTIFIER_PUBLIC_KEY"]))
    return Accounts(
        config, env=store_env(store, "accounts"), vault=Vault(store.vault_url("accounts"), "accounts")
    )


def all_events(app: Any) -> list[Any]:
    events, start = [], 1
    while True:
        page = app.recorder.select_notifications(start=start, limit=1000)
        events.extend(app.mapper.to_domain_event(n) for n in page)
        if len(page) < 1000:
            return events
        start = page[-1].id + 1


async def publish_subject_keys(kafka: str, system: System, vault: Any) -> None:
    """Publish a vault's unpublished keys on its owner's keys topic, as a relay does: sealed
    for every other service's bus key, signed with the owner's."""
    from backbone.subjectkeys import key_records

    signer = system.signer(vault.service)
    recipients = system.keyring().others(vault.service)
    while records := vault.unpublished():
        wire = [
            signer.sign_record(r)
            for r in key_records(system.topic(f"{vault.service}.subject-keys"), records, recipients)
        ]
        await publish(kafka, wire[0].topic, [(r.key, r.value, r.headers) for r in wire])
        vault.mark_published(records)


def opened_key(system: System, reader: str, record: Any) -> Any:
    """A keys-topic record (`SubjectKey`) as `reader` opens it with its bus key."""
    from backbone.signing import open_subject_key

    if record.erased:
        return record
    raw = open_subject_key(system.signer(reader), record.sealed_keys)
    assert raw is not None, f"no copy of the key of {record.subject_id} is sealed for {reader}"
    return record.model_copy(update={"key": base64.b64encode(raw).decode(), "sealed_keys": {}})
