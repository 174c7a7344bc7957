"""``python -m deploy.local ...``: run the infrastructure (and the services) without Docker.

python -m deploy.local up                 # Kafka + mail catcher + the three services
python -m deploy.local kafka assemble     # resolve the broker jars (once)
python -m deploy.local kafka start        # a broker in the foreground until Ctrl-C
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
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from deploy.local._proc import InfraError, Watchdog, terminate_group, write_private
from deploy.local.kafka import LocalKafka
from deploy.local.mailcatcher import MailCatcher, MailCatcherUI
from deploy.local.postgres import LocalPostgres

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
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("accounts", "services.accounts", 8001, {"PUBLIC_BASE_URL": "http://127.0.0.1:8001"}),
    ServiceSpec("bookings", "services.bookings", 8002),
    ServiceSpec(
        "notifier",
        "services.notifier",
        8003,
        {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": "1025", "SMTP_TLS": "none"},
    ),
)

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Run the local infrastructure (and the services) without Docker.",
)
kafka_app = typer.Typer(no_args_is_help=True, help="A local Kafka broker from Maven jars.")
postgres_app = typer.Typer(no_args_is_help=True, help="A throw-away local PostgreSQL.")
app.add_typer(kafka_app, name="kafka")
app.add_typer(postgres_app, name="postgres")


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
) -> None:
    """Start a broker in the foreground until Ctrl-C."""
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
    database: Annotated[str, typer.Option(help="A database to create.")] = "booking",
) -> None:
    """Start a throw-away PostgreSQL (fresh data dir) in the foreground until Ctrl-C."""
    pg = LocalPostgres(port=port, user=user, password=password)
    with _sigterm_as_keyboard_interrupt():
        try:
            params = pg.start()
            params.create_database(database)
            for k, v in params.env(database).items():
                _echo(f"{k}={v}", color="green")
            _echo(f"DSN: {params.dsn(database)}   (Ctrl-C to stop; data is discarded)")
            _wait_for_ctrl_c()
        except KeyboardInterrupt:
            pass
        except (InfraError, TimeoutError) as exc:
            raise _fail(exc) from None
        finally:
            pg.close()


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


class _Service:
    def __init__(self, spec: ServiceSpec, env: dict[str, str]) -> None:
        self.spec = spec
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self._pump: threading.Thread | None = None

    def runnable(self) -> str | None:
        """None if ``python -m <module>`` can run, else why not."""
        try:
            if importlib.util.find_spec(self.spec.module) is None:
                return f"package {self.spec.module} does not exist yet"
            if importlib.util.find_spec(f"{self.spec.module}.__main__") is None:
                return f"{self.spec.module} has no __main__.py yet"
        except Exception as exc:  # an import error in the package itself
            return f"{self.spec.module} cannot be imported: {exc!r}"
        return None

    def start(self) -> None:
        watchdog = Watchdog.get()
        self.proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", self.spec.module],
            cwd=REPO_ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        watchdog.watch(self.proc.pid, signal.SIGTERM, 10)
        self._pump = threading.Thread(target=self._pump_output, daemon=True)
        self._pump.start()

    def _pump_output(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        prefix = typer.style(f"[{self.spec.name:>8}] ", fg="cyan")
        for line in iter(self.proc.stdout.readline, b""):
            sys.stdout.write(prefix + line.decode("utf-8", "replace"))
            sys.stdout.flush()

    def stop(self) -> None:
        if self.proc is not None:
            terminate_group(self.proc, sig=signal.SIGTERM, timeout=10)
        if self._pump is not None:
            self._pump.join(timeout=2)


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
    try:
        _private, notifier_public = load_or_create_sealing_keys(sealing_key)
        load_or_create_signing_key(signing_key)
    except Exception as exc:  # e.g. an unreadable key file: start anyway, say why
        return {}, [f"no service keys generated ({exc!r})"]
    admin_token = os.environ.get(ADMIN_TOKEN_ENV, DEFAULT_LOCAL_ADMIN_TOKEN)
    extra = {
        "accounts": {
            "NOTIFIER_PUBLIC_KEY": base64.b64encode(notifier_public).decode(),
            "ADMIN_API_TOKEN": admin_token,
            "SESSION_SIGNING_KEY_FILE": str(signing_key),
        },
        "bookings": {"SESSION_PUBLIC_KEY_FILE": str(public_path(signing_key))},
        "notifier": {"SEALING_KEY_FILE": str(sealing_key)},
    }
    return extra, [
        f"admin API token: {admin_token}  ({ADMIN_TOKEN_ENV}); it adds staff members, e.g.:",
        f"  curl -s -X POST http://127.0.0.1:8001/v1/admin/tenants/demo/staff -H 'Authorization: Bearer "
        f"{admin_token}' -H 'Content-Type: application/json' -d '{{\"label\": \"front desk\"}}'",
    ]


OPS_CONFIG = LOCAL_DIR / "ops.toml"
_NOT_SETTINGS = {"KAFKA_BOOTSTRAP_SERVERS", "PYTHONUNBUFFERED"}  # shared, or not a service setting


def write_ops_config(bootstrap: str, envs: dict[str, dict[str, str]]) -> Path:
    """The operator tool's view of this local deployment (`booking-accounts -c .local/ops.toml`):
    what ``up`` gives each service beyond the caller's environment."""
    lines = ["# Written by ./deploy/up: booking-accounts --config .local/ops.toml status", "", "[env]"]
    lines.append(f"KAFKA_BOOTSTRAP_SERVERS = {json.dumps(bootstrap)}")
    for name, env in envs.items():
        lines += ["", f"[services.{name}.env]"]
        lines += [
            f"{key} = {json.dumps(value)}" for key, value in sorted(env.items()) if key not in _NOT_SETTINGS
        ]
    write_private(OPS_CONFIG, "\n".join(lines) + "\n")  # it names the staff token
    return OPS_CONFIG


def service_env(spec: ServiceSpec, bootstrap: str) -> dict[str, str]:
    data_dir = LOCAL_DIR / "data" / spec.name
    data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        DATA_DIR=str(data_dir),
        HTTP_PORT=str(spec.http_port),
        LOG_FORMAT="console",
        PYTHONUNBUFFERED="1",
    )
    env.update(spec.env)
    return env


@app.command("up")
def up(
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Delete .local/kafka and .local/data first.")
    ] = False,
    kafka_port: Annotated[int, typer.Option(help="Kafka broker port.")] = 9092,
    kafka_controller_port: Annotated[int, typer.Option(help="KRaft controller port.")] = 9093,
    smtp_port: Annotated[int, typer.Option(help="Mail catcher SMTP port.")] = 1025,
    mail_ui_port: Annotated[int, typer.Option(help="Mail catcher web UI port.")] = 8025,
) -> None:
    """Kafka + mail catcher + the services, until Ctrl-C.

    Kafka data and the services' DATA_DIRs persist in .local/ between runs (--fresh wipes
    them).
    """
    if fresh:
        for d in (LOCAL_DIR / "kafka", LOCAL_DIR / "data"):
            shutil.rmtree(d, ignore_errors=True)
    kafka = LocalKafka(
        work_dir=LOCAL_DIR / "kafka",
        persistent=True,
        broker_port=kafka_port,
        controller_port=kafka_controller_port,
    )
    catcher = MailCatcher(port=smtp_port, directory=LOCAL_DIR / "mail")
    ui = MailCatcherUI(catcher, port=mail_ui_port)
    services: list[_Service] = []
    with _sigterm_as_keyboard_interrupt():
        try:
            _echo("Assembling and starting Kafka ...")
            bootstrap = kafka.start()
            catcher.start()
            ui.start()
            lines = [
                f"Kafka          {bootstrap}   (log: {kafka.log_file})",
                f"Mail (SMTP)    127.0.0.1:{catcher.port}",
                f"Mail (web UI)  {ui.url}",
            ]
            secrets, notes = local_secrets()
            ops_envs: dict[str, dict[str, str]] = {}
            for spec in SERVICES:
                env = service_env(spec, bootstrap)
                for key, value in secrets.get(spec.name, {}).items():
                    env.setdefault(key, value)  # the caller's environment wins
                if spec.name == "notifier":
                    env["SMTP_PORT"] = str(catcher.port)
                ops_envs[spec.name] = {k: v for k, v in env.items() if os.environ.get(k) != v}
                svc = _Service(spec, env)
                why_not = svc.runnable()
                if why_not:
                    _echo(f"skipping {spec.name}: {why_not}", color="yellow")
                    lines.append(f"{spec.name:<14} not started ({why_not})")
                    continue
                svc.start()
                services.append(svc)
                lines.append(f"{spec.name:<14} http://127.0.0.1:{spec.http_port}/docs")
            lines += notes
            lines.append(
                f"operator tool: booking-accounts --config {write_ops_config(bootstrap, ops_envs)} status"
            )
            _echo("\n".join(["", "Running:", *("  " + s for s in lines), ""]), color="green")
            if not services:
                _echo("No service could be started; Kafka and the mail catcher keep running.")
            _echo("Ctrl-C to stop everything.")
            reported: set[str] = set()
            while True:
                time.sleep(0.5)
                for svc in services:
                    exited = svc.proc is not None and svc.proc.poll() is not None
                    if exited and svc.spec.name not in reported:
                        reported.add(svc.spec.name)
                        assert svc.proc is not None
                        _echo(
                            f"{svc.spec.name} exited with code {svc.proc.returncode}",
                            color="red",
                        )
        except KeyboardInterrupt:
            _echo("\nStopping ...")
        except (InfraError, TimeoutError, OSError) as exc:
            raise _fail(exc) from None
        finally:
            for svc in reversed(services):
                svc.stop()
            ui.stop()
            catcher.stop()
            kafka.stop()
    _echo("Stopped.")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
