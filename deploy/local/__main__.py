"""``python -m deploy.local ...``: run the infrastructure (and the services) without Docker.

python -m deploy.local up                 # Kafka + mail catcher + the three services
python -m deploy.local kafka assemble     # resolve the broker jars (once)
python -m deploy.local kafka start        # a broker in the foreground until Ctrl-C
python -m deploy.local kafka start --secure   # ... SASL_SSL only, with ACLs, a user per principal
python -m deploy.local up --secure        # everything on that broker, each service its own user
python -m deploy.local postgres install   # apt-get install postgresql if missing (root)
python -m deploy.local postgres start     # a throw-away PostgreSQL until Ctrl-C
python -m deploy.local mailcatcher        # SMTP 1025 + web UI 8025
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from backbone.settings import postgres_database
from contracts.topics import OPS_USER
from deploy.local._proc import InfraError, write_private
from deploy.local.fresh import FreshRefused, clear_postgres, postgres_stores
from deploy.local.kafka import LocalKafka
from deploy.local.mailcatcher import MailCatcher, MailCatcherUI
from deploy.local.postgres import LocalPostgres
from deploy.local.redis import LocalRedis
from deploy.local.securekafka import SecuredKafka
from deploy.local.supervisor import Supervised, wait_until_up

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_DIR = REPO_ROOT / ".local"


@dataclass(frozen=True)
class ServiceSpec:
    """One service started by ``up``: ``python -m <module>`` with the common env + ``env``."""

    name: str
    module: str
    http_port: int
    env: dict[str, str] = field(default_factory=dict)


# The one list of services that `up` starts (in this order).
# Emailed links land in the portal (8004), which calls the three services' HTTP APIs.
PORTAL = "http://127.0.0.1:8004"
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("accounts", "services.accounts", 8001, {"PUBLIC_BASE_URL": PORTAL}),
    ServiceSpec("bookings", "services.bookings", 8002),
    # Mail: the catcher's, or SMTP_HOST/SMTP_PORT from the caller. SMTP_TLS unset: none for a
    # mail server on loopback (the catcher), STARTTLS for any other (services/notifier/settings.py).
    ServiceSpec("notifier", "services.notifier", 8003, {"PORTAL_URL": PORTAL}),
    ServiceSpec(
        "portal",
        "services.portal",
        8004,
        {
            "ACCOUNTS_URL": "http://127.0.0.1:8001",
            "BOOKINGS_URL": "http://127.0.0.1:8002",
            "NOTIFIER_URL": "http://127.0.0.1:8003",
        },
    ),
)

# The services that keep stores (the portal keeps none): each gets its own database.
STORE_SERVICES = tuple(spec.name for spec in SERVICES if spec.name != "portal")

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Run the local infrastructure (and the services) without Docker.",
)
kafka_app = typer.Typer(no_args_is_help=True, help="A local Kafka broker from Maven jars.")
postgres_app = typer.Typer(no_args_is_help=True, help="A throw-away local PostgreSQL.")
app.add_typer(kafka_app, name="kafka")
app.add_typer(postgres_app, name="postgres")
redis_app = typer.Typer(no_args_is_help=True, help="A throw-away local Redis (the shared rate limits).")
app.add_typer(redis_app, name="redis")


# --------------------------------------------------------------------------- helpers


def _echo(msg: str, *, err: bool = False, color: str | None = None) -> None:
    typer.secho(msg, err=err, fg=color)


@contextlib.contextmanager
def _sigterm_as_keyboard_interrupt() -> Iterator[None]:
    """Make SIGTERM behave like Ctrl-C so the same cleanup path runs."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait_for_ctrl_c() -> None:
    while True:
        time.sleep(3600)


def _fail(exc: Exception) -> typer.Exit:
    _echo(f"error: {exc}", err=True, color="red")
    return typer.Exit(code=1)


# --------------------------------------------------------------------------- kafka


@kafka_app.command("assemble")
def kafka_assemble() -> None:
    """Resolve the broker jars with Maven into the cache (no-op when already there)."""
    kafka = LocalKafka()
    try:
        libs = kafka.assemble()
    except InfraError as exc:
        raise _fail(exc) from None
    _echo(f"Kafka {kafka.version} jars: {libs}")


@kafka_app.command("start")
def kafka_start(
    port: Annotated[int, typer.Option(help="Broker port (0 = a free one).")] = 0,
    work_dir: Annotated[
        Path | None, typer.Option(help="Keep data here (persistent); default: a temp dir.")
    ] = None,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="SASL_SSL only (a CA and certificate made with openssl), ACLs, a user per service, "
            "for publishers and for the operator tool; PORT is then the clients' SASL_SSL port.",
        ),
    ] = False,
) -> None:
    """Start a broker in the foreground until Ctrl-C."""
    if secure:
        _kafka_start_secure(port, work_dir)
        return
    kafka = LocalKafka(broker_port=port, work_dir=work_dir, persistent=work_dir is not None)
    with _sigterm_as_keyboard_interrupt():
        try:
            bootstrap = kafka.start()
            _echo(f"KAFKA_BOOTSTRAP_SERVERS={bootstrap}", color="green")
            _echo(f"broker log: {kafka.log_file}   (Ctrl-C to stop)")
            _wait_for_ctrl_c()
        except KeyboardInterrupt:
            pass
        except (InfraError, TimeoutError) as exc:
            raise _fail(exc) from None
        finally:
            kafka.close()


def _kafka_start_secure(port: int, work_dir: Path | None) -> None:
    import tempfile

    from contracts.topics import rights

    directory = work_dir or Path(tempfile.mkdtemp(prefix="booking-secure-kafka-"))
    secured = SecuredKafka(directory, persistent=work_dir is not None, ports=(0, 0, port))
    with _sigterm_as_keyboard_interrupt():
        try:
            secured.start()
            for principal in rights():
                env = " ".join(f"{k}={v}" for k, v in secured.env(principal).items())
                _echo(f"# {principal}\n{env}", color="green")
            _echo(f"super user: admin (password in {directory / 'kafka-users.json'})")
            _echo(f"broker log: {secured.kafka.log_file}   (Ctrl-C to stop)")
            _wait_for_ctrl_c()
        except KeyboardInterrupt:
            pass
        except (InfraError, TimeoutError) as exc:
            raise _fail(exc) from None
        finally:
            secured.close()
            if work_dir is None:
                shutil.rmtree(directory, ignore_errors=True)


# --------------------------------------------------------------------------- postgres


@postgres_app.command("install")
def postgres_install() -> None:
    """Find the PostgreSQL server binaries; apt-get install them if missing (root only)."""
    try:
        bin_dir = LocalPostgres().ensure_installed()
    except InfraError as exc:
        raise _fail(exc) from None
    _echo(f"PostgreSQL binaries: {bin_dir}")


@postgres_app.command("start")
def postgres_start(
    port: Annotated[int, typer.Option(help="Port (0 = a free one).")] = 0,
    user: Annotated[str, typer.Option(help="Superuser to create.")] = "booking",
    password: Annotated[str, typer.Option(help="Its password.")] = "booking",  # noqa: S107
    prefix: Annotated[
        str, typer.Option(help="POSTGRES_DBNAME: each service's database is <prefix>_<service>.")
    ] = "booking",
) -> None:
    """Start a throw-away PostgreSQL (fresh data dir) in the foreground until Ctrl-C, with one
    database per service, and print the settings that point the services at them."""
    pg = LocalPostgres(port=port, user=user, password=password)
    with _sigterm_as_keyboard_interrupt():
        try:
            params = pg.start()
            databases = {name: postgres_database(prefix, name) for name in STORE_SERVICES}
            for database in databases.values():
                params.create_database(database)
            for k, v in {**params.env(prefix), "STORE": "postgres"}.items():
                _echo(f"{k}={v}", color="green")
            for name, database in databases.items():
                _echo(f"{name}: database {database}, DSN {params.dsn(database)}")
            _echo("(Ctrl-C to stop; data is discarded)")
            _wait_for_ctrl_c()
        except KeyboardInterrupt:
            pass
        except (InfraError, TimeoutError) as exc:
            raise _fail(exc) from None
        finally:
            pg.close()


# --------------------------------------------------------------------------- redis


@redis_app.command("install")
def redis_install() -> None:
    """Find redis-server; apt-get install Debian's redis-server if missing (root only)."""
    try:
        binary = LocalRedis().ensure_installed()
    except InfraError as exc:
        raise _fail(exc) from None
    _echo(f"Redis server: {binary}")


@redis_app.command("start")
def redis_start(
    port: Annotated[int, typer.Option(help="Port (0 = a free one).")] = 0,
    password: Annotated[str, typer.Option(help="Its password (default: a random one).")] = "",
) -> None:
    """Start a throw-away Redis (nothing persisted) in the foreground until Ctrl-C, and print the
    accounts service's RATE_LIMIT_STORAGE setting for it."""
    redis = LocalRedis(port=port, password=password or None)
    with _sigterm_as_keyboard_interrupt():
        try:
            params = redis.start()
            _echo(f"RATE_LIMIT_STORAGE={params.rate_limit_storage}", color="green")
            _echo(f"REDIS_URL={params.url}   (Ctrl-C to stop; counters are discarded)")
            _wait_for_ctrl_c()
        except KeyboardInterrupt:
            pass
        except (InfraError, TimeoutError) as exc:
            raise _fail(exc) from None
        finally:
            redis.close()


# --------------------------------------------------------------------------- mailcatcher


@app.command("mailcatcher")
def mailcatcher(
    smtp_port: Annotated[int, typer.Option(help="SMTP port.")] = 1025,
    http_port: Annotated[int, typer.Option(help="Web UI port.")] = 8025,
    directory: Annotated[
        Path | None, typer.Option(help="Also write each message as an .eml file here.")
    ] = None,
) -> None:
    """An SMTP server that keeps every email, with a web UI to read them."""
    catcher = MailCatcher(port=smtp_port, directory=directory)
    ui = MailCatcherUI(catcher, port=http_port)
    with _sigterm_as_keyboard_interrupt():
        try:
            catcher.start()
            ui.start()
            _echo(f"SMTP 127.0.0.1:{catcher.port}   web UI {ui.url}   (Ctrl-C to stop)", color="green")
            _wait_for_ctrl_c()
        except KeyboardInterrupt:
            pass
        except OSError as exc:
            raise _fail(exc) from None
        finally:
            ui.stop()
            catcher.stop()


# --------------------------------------------------------------------------- up


def runnable(spec: ServiceSpec) -> str | None:
    """None if ``python -m <module>`` can run, else why not."""
    try:
        if importlib.util.find_spec(spec.module) is None:
            return f"package {spec.module} does not exist yet"
        if importlib.util.find_spec(f"{spec.module}.__main__") is None:
            return f"{spec.module} has no __main__.py yet"
    except Exception as exc:  # an import error in the package itself
        return f"{spec.module} cannot be imported: {exc!r}"
    return None


ADMIN_TOKEN_ENV = "BOOKING_ACCOUNTS_ADMIN_TOKEN"  # noqa: S105 - a variable name
DEFAULT_LOCAL_ADMIN_TOKEN = "local-admin-token-for-development-only"  # noqa: S105 - local development only


def local_secrets() -> tuple[dict[str, dict[str, str]], list[str]]:
    """Keys and tokens the services need beyond the common environment, created once under
    .local/data (mirrors tests/support/system.py). Returns (extra env per service, notes).

    Tolerant of the services' code changing: if backbone.credentials does not offer the
    helpers, nothing is added and a note says so.
    """
    try:
        from backbone.credentials import (
            load_or_create_sealing_keys,
            load_or_create_signing_key,
            public_path,
        )
    except ImportError as exc:
        return {}, [f"no service keys generated ({exc})"]
    data = LOCAL_DIR / "data"
    sealing_key = data / "notifier" / "sealing.key"
    signing_key = data / "accounts" / "session-signing-key.pem"
    bus = data / "keys" / "bus"
    try:
        from backbone.signing import create_key

        _private, notifier_public = load_or_create_sealing_keys(sealing_key)
        load_or_create_signing_key(signing_key)
        for service in ("accounts", "bookings", "notifier"):
            create_key(bus, service)
    except Exception as exc:  # e.g. an unreadable key file: start anyway, say why
        return {}, [f"no service keys generated ({exc!r})"]
    admin_token = os.environ.get(ADMIN_TOKEN_ENV, DEFAULT_LOCAL_ADMIN_TOKEN)
    extra = {
        "accounts": {
            "NOTIFIER_PUBLIC_KEY": base64.b64encode(notifier_public).decode(),
            "ADMIN_API_TOKEN": admin_token,
            "SESSION_SIGNING_KEY_FILE": str(signing_key),
        },
        "bookings": {
            "SESSION_PUBLIC_KEY_FILE": str(public_path(signing_key)),
            "ADMIN_API_TOKEN": admin_token,
        },
        "notifier": {"SEALING_KEY_FILE": str(sealing_key)},
    }
    for service, env in extra.items():  # each service's bus key, and every service's public key
        env.update(BUS_KEY_FILE=str(bus / f"{service}.key"), BUS_TRUSTED_KEYS_DIR=str(bus / "trusted"))
    return extra, [
        f"admin API token: {admin_token}  ({ADMIN_TOKEN_ENV}); it adds staff members, e.g.:",
        f"  curl -s -X POST http://127.0.0.1:8001/v1/admin/tenants/demo/staff -H 'Authorization: Bearer "
        f"{admin_token}' -H 'Content-Type: application/json' -d '{{\"label\": \"front desk\"}}'",
        "and registers command publishers' keys with bookings (POST http://127.0.0.1:8002/v1/admin/publishers,"
        " see docs/publishing-booking-commands.md; `python -m examples.publish_booking` prints its key)",
    ]


OPS_CONFIG = LOCAL_DIR / "ops.toml"


def setting_names(service: str) -> set[str] | None:
    """The upper-case names of a service's settings (its settings class), or None if the
    service's code cannot say (then the whole environment is a service's settings)."""
    try:
        from ops.registry import settings_class

        return {name.upper() for name in settings_class(service).model_fields}
    except Exception:  # a service under construction: keep going, the file is a convenience
        return None


def write_ops_config(
    bootstrap: str,
    envs: dict[str, dict[str, str]],
    path: Path = OPS_CONFIG,
    common: Mapping[str, str] | None = None,
) -> Path:
    """The operator tool's view of this local deployment (`booking-accounts -c .local/ops.toml`):
    every setting each service was started with, the caller's environment included (STORE,
    POSTGRES_*, ...), so that the tool opens the very stores the services use."""
    lines = ["# Written by ./deploy/up: booking-accounts --config .local/ops.toml status", "", "[env]"]
    lines.append(f"KAFKA_BOOTSTRAP_SERVERS = {json.dumps(bootstrap)}")
    common = dict(common or {})  # the tool's own (its Kafka user on a secured broker)
    lines += [f"{key} = {json.dumps(value)}" for key, value in sorted(common.items())]
    for name, env in envs.items():
        names = setting_names(name)
        settings = {
            key.upper(): value
            for key, value in env.items()
            if (key.upper() in names if names is not None else key not in os.environ)
            and key.upper() != "KAFKA_BOOTSTRAP_SERVERS"
            and key.upper() not in common
        }
        lines += ["", f"[services.{name}.env]"]
        lines += [f"{key} = {json.dumps(value)}" for key, value in sorted(settings.items())]
    # Readable by its owner only, from the start: it names the staff token and any password.
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, "\n".join(lines) + "\n")
    return path


MAIL_SETTINGS = ("SMTP_HOST", "SMTP_PORT")


def service_env(
    spec: ServiceSpec,
    bootstrap: str,
    caller: Mapping[str, str] | None = None,
    local_dir: Path = LOCAL_DIR,
    defaults: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment a service starts with: the caller's (``os.environ``) with what ``up``
    decides for each service (the broker it started, a DATA_DIR and an HTTP port), and, where
    the caller gave none, the spec's settings and ``defaults`` (keys, the mail catcher)."""
    data_dir = local_dir / "data" / spec.name
    data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ if caller is None else caller)
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        DATA_DIR=str(data_dir),
        HTTP_PORT=str(spec.http_port),
        LOG_FORMAT="console",
        PYTHONUNBUFFERED="1",
    )
    given_mail_server = any(key in env for key in MAIL_SETTINGS)
    for key, value in {**spec.env, **(defaults or {})}.items():
        if key in MAIL_SETTINGS and given_mail_server:
            continue  # the caller's mail server, host and port together
        env.setdefault(key, value)  # the caller's environment wins
    return env


def mail_line(env: Mapping[str, str], catcher_port: int) -> str:
    """The banner's line about where the notifier sends email."""
    host, port = env.get("SMTP_HOST", "127.0.0.1"), env.get("SMTP_PORT", "1025")
    if (host, port) == ("127.0.0.1", str(catcher_port)):
        return f"Mail (SMTP)    127.0.0.1:{catcher_port}, the mail catcher"
    return (
        f"Mail (SMTP)    the notifier sends to {host}:{port} (SMTP_HOST/SMTP_PORT from your "
        "environment), not to the mail catcher"
    )


def _secure_topics_and_users(secured: SecuredKafka) -> str:
    """The derived ACLs granted (idempotent: also after a restart, with new rules), and the
    topics made as the operator tool's user: the services may not create them."""
    import asyncio

    from backbone import kafkaacl, topics
    from backbone.settings import ServiceSettings

    secured.grant([acl for acls in kafkaacl.derived(secured.topic).values() for acl in acls])
    asyncio.run(topics.create(secured.cluster(OPS_USER), topics.every(ServiceSettings())))
    return secured.bootstrap_servers


@app.command("up")
def up(
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="Delete .local/kafka and .local/data first, and clear the services' PostgreSQL "
            "databases when STORE=postgres (or refuse, saying why).",
        ),
    ] = False,
    kafka_port: Annotated[int, typer.Option(help="Kafka broker port.")] = 9092,
    kafka_controller_port: Annotated[int, typer.Option(help="KRaft controller port.")] = 9093,
    smtp_port: Annotated[int, typer.Option(help="Mail catcher SMTP port.")] = 1025,
    mail_ui_port: Annotated[int, typer.Option(help="Mail catcher web UI port.")] = 8025,
    redis_port: Annotated[
        int, typer.Option(help="Redis port for the shared rate limits (0 = a free one).")
    ] = 0,
    restart: Annotated[
        bool,
        typer.Option(
            "--restart/--no-restart", help="Restart a service that exits, with a backoff (1 s ... 30 s)."
        ),
    ] = True,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="Kafka with SASL_SSL and ACLs (.local/kafka-secure; clients on --kafka-port + 2): "
            "each service as its own user, the topics made by the operator tool's user.",
        ),
    ] = False,
) -> None:
    """Kafka + mail catcher + Redis (the accounts' rate limits) + the services, until Ctrl-C.

    Kafka data and the services' DATA_DIRs persist in .local/ between runs (--fresh wipes
    them). A service that exits is restarted (deploy/local/supervisor.py), unless
    --no-restart. SMTP_HOST/SMTP_PORT in your environment send the notifier's email there.
    Redis is throw-away (its counters start afresh each time); RATE_LIMIT_STORAGE in your
    environment points the accounts service elsewhere, and then no Redis is started.
    """
    if fresh:  # every store, PostgreSQL included, or nothing (deploy/local/fresh.py)
        try:
            envs = {spec.name: {**os.environ, **spec.env} for spec in SERVICES}
            for line in clear_postgres(postgres_stores(envs)):
                _echo(line)
        except FreshRefused as exc:
            raise _fail(exc) from None
        for d in (LOCAL_DIR / "kafka", LOCAL_DIR / "kafka-secure", LOCAL_DIR / "data"):
            shutil.rmtree(d, ignore_errors=True)
    secured = (
        SecuredKafka(
            LOCAL_DIR / "kafka-secure",
            persistent=True,
            ports=(kafka_port, kafka_controller_port, kafka_port + 2),
        )
        if secure
        else None
    )
    kafka = (
        secured.kafka
        if secured is not None
        else LocalKafka(
            work_dir=LOCAL_DIR / "kafka",
            persistent=True,
            broker_port=kafka_port,
            controller_port=kafka_controller_port,
        )
    )
    catcher = MailCatcher(port=smtp_port, directory=LOCAL_DIR / "mail")
    ui = MailCatcherUI(catcher, port=mail_ui_port)
    redis = None if "RATE_LIMIT_STORAGE" in os.environ else LocalRedis(port=redis_port)
    services: list[Supervised] = []
    with _sigterm_as_keyboard_interrupt():
        try:
            _echo("Assembling and starting Kafka ...")
            bootstrap = kafka.start()
            kafka_env: dict[str, dict[str, str]] = {}
            ops_common: dict[str, str] = {}
            if secured is not None:
                bootstrap = _secure_topics_and_users(secured)
                kafka_env = {
                    spec.name: {**secured.env(spec.name), "TOPIC_AUTO_CREATE": "false"}
                    for spec in SERVICES
                    if spec.name != "portal"
                }
                ops_common = {
                    k: v for k, v in secured.env(OPS_USER).items() if k != "KAFKA_BOOTSTRAP_SERVERS"
                }
            catcher.start()
            ui.start()
            secrets, notes = local_secrets()
            if redis is not None:  # several accounts instances would share it (docs/operations.md)
                secrets.setdefault("accounts", {})["RATE_LIMIT_STORAGE"] = redis.start().rate_limit_storage
            mail = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(catcher.port)}
            ops_envs: dict[str, dict[str, str]] = {}
            skipped: dict[str, str] = {}
            for spec in SERVICES:
                defaults = {**secrets.get(spec.name, {}), **(mail if spec.name == "notifier" else {})}
                env = service_env(spec, bootstrap, defaults=defaults)
                env.update(kafka_env.get(spec.name, {}))  # its own Kafka user (--secure)
                if spec.name != "portal":  # no store, no bus: nothing for the operator tool
                    ops_envs[spec.name] = env
                why_not = runnable(spec)
                if why_not:
                    _echo(f"skipping {spec.name}: {why_not}", color="yellow")
                    skipped[spec.name] = why_not
                    continue
                svc = Supervised(
                    spec.name,
                    [sys.executable, "-m", spec.module],
                    env,
                    cwd=REPO_ROOT,
                    restart=restart,
                    health_url=f"http://127.0.0.1:{spec.http_port}/health",
                    say=lambda text, color: _echo(text, color=color),
                )
                svc.start()
                services.append(svc)
            config = write_ops_config(bootstrap, ops_envs, common=ops_common)
            _echo("Waiting for the services to answer ...")
            wait_until_up(services, timeout=90)
            lines = [
                f"Kafka          {bootstrap}   (log: {kafka.log_file})",
                mail_line(ops_envs["notifier"], catcher.port),
                f"Mail (web UI)  {ui.url}",
                f"Redis          {redis.params.host}:{redis.params.port}, the accounts' rate limits"
                if redis is not None
                else "Redis          not started: RATE_LIMIT_STORAGE from your environment",
            ]
            for spec in SERVICES:
                svc = next((s for s in services if s.name == spec.name), None)
                state = f"not started ({skipped[spec.name]})" if svc is None else svc.state()
                page = "/t/demo/" if spec.name == "portal" else "/docs"
                lines.append(f"{spec.name:<14} {state:<8} http://127.0.0.1:{spec.http_port}{page}")
            lines += notes
            if secured is not None:
                lines.append(
                    f"Kafka users    SASL_SSL, CA {secured.ca.ca_file}; passwords in "
                    f"{secured.work_dir / 'kafka-users.json'}"
                )
            lines.append(f"operator tool: booking-accounts --config {config} status")
            lines.append(
                "a service that exits is "
                + ("restarted, with a backoff" if restart else "not restarted (--no-restart)")
            )
            _echo("\n".join(["", "Running:", *("  " + s for s in lines), ""]), color="green")
            if not services:
                _echo("No service could be started; Kafka and the mail catcher keep running.")
            _echo("Ctrl-C to stop everything.")
            while True:
                time.sleep(0.5)
                for svc in services:
                    svc.check()
        except KeyboardInterrupt:
            _echo("\nStopping ...")
        except (InfraError, TimeoutError, OSError) as exc:
            raise _fail(exc) from None
        finally:
            for svc in reversed(services):
                svc.stop()
            ui.stop()
            catcher.stop()
            if redis is not None:
                redis.close()
            kafka.stop()
    _echo("Stopped.")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
