"""A throw-away PostgreSQL server from the distribution's binaries, no Docker.

    pg = LocalPostgres()
    pg.ensure_installed()        # finds initdb/pg_ctl; apt-get installs PostgreSQL if root
    params = pg.start()          # initdb a fresh dir, start on 127.0.0.1:<free port>, wait
    params.create_database("t1")
    psycopg.connect(params.dsn("t1"))
    pg.kill(); pg.restart()      # crash + recovery on the same port and data
    pg.close()

When run as root the server runs as the ``postgres`` OS user (``runuser``), because
PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from deploy.local._proc import (
    LOOPBACK,
    InfraError,
    LocalServer,
    ToolMissingError,
    elapsed,
    free_ports,
    log,
    read_from,
    run_checked,
    spawn,
    terminate_group,
    write_private,
)

PG_OS_USER = "postgres"
ADDRESS_IN_USE = "Address already in use"
SHMEM_IN_USE = "is still in use"  # "pre-existing shared memory block ... is still in use"
LOCK_FILE_EXISTS = 'lock file "postmaster.pid" already exists'


@dataclass(frozen=True)
class PostgresParams:
    """Where a PostgreSQL server is and how to log in as a superuser.

    The same object is handed out by the ``postgres`` test fixture whether the server is
    external (POSTGRES_* env), a testcontainer or a :class:`LocalPostgres`.
    """

    host: str
    port: int
    user: str
    password: str

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq URI, e.g. ``postgresql://user:pw@127.0.0.1:5432/db`` (psycopg.connect)."""
        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{quote(dbname, safe='')}"
        )

    def sqlalchemy_url(self, dbname: str = "postgres") -> str:
        """The same for SQLAlchemy with the psycopg 3 driver."""
        return "postgresql+psycopg" + self.dsn(dbname)[len("postgresql") :]

    def env(self, dbname: str = "postgres") -> dict[str, str]:
        """POSTGRES_* settings of the services for this server. `dbname` is their
        POSTGRES_DBNAME, read by its rule (`backbone.settings.postgres_database`): a prefix,
        `booking` -> databases booking_accounts, booking_bookings, booking_notifier."""
        return {
            "POSTGRES_HOST": self.host,
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_USER": self.user,
            "POSTGRES_PASSWORD": self.password,
            "POSTGRES_DBNAME": dbname,
        }

    def connect(self, dbname: str = "postgres", **kwargs: Any) -> Any:
        """A psycopg (3) connection; autocommit unless told otherwise."""
        import psycopg

        kwargs.setdefault("autocommit", True)
        kwargs.setdefault("connect_timeout", 5)
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=dbname,
            **kwargs,
        )

    def create_database(self, name: str) -> str:
        """CREATE DATABASE ``name`` (owned by this user); returns its DSN."""
        from psycopg import sql

        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE IF EXISTS ``name``, disconnecting its sessions."""
        from psycopg import sql

        with self.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def ping(self, timeout: float = 2.0) -> bool:
        try:
            with self.connect(connect_timeout=max(1, int(timeout))) as conn:
                conn.execute("SELECT 1")
            return True
        except Exception:
            return False


def _version_key(path: str) -> tuple[int, ...]:
    m = re.search(r"/postgresql/([\d.]+)/bin$", path)
    return tuple(int(x) for x in m.group(1).split(".")) if m else (0,)


def find_bin_dir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres, or None.

    PATH first (e.g. a symlink in /usr/local/bin), then /usr/lib/postgresql/<newest>/bin
    (Debian/Ubuntu keep the server binaries off PATH).
    """
    initdb = shutil.which("initdb")
    if initdb:
        d = Path(os.path.realpath(initdb)).parent
        if all((d / b).exists() for b in ("pg_ctl", "postgres")):
            return d
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
        if all(Path(d, b).exists() for b in ("initdb", "pg_ctl", "postgres")):
            return Path(d)
    return None


class LocalPostgres(LocalServer):
    """A PostgreSQL server in a fresh data dir on 127.0.0.1:<free port>.

    Password authentication (scram-sha-256) for the superuser ``user``/``password``; the unix
    socket lives inside the data dir; fsync stays on. The server is in its own process group
    registered with the orphan watchdog (see ``_watchdog.py``).
    """

    work_dir_prefix = "booking-pg-"

    def __init__(
        self,
        *,
        work_dir: Path | str | None = None,
        port: int = 0,
        user: str = "booking",
        password: str | None = None,
        bin_dir: Path | str | None = None,
        max_connections: int = 200,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self._work_dir = Path(work_dir) if work_dir else None
        self._owns_work_dir = work_dir is None
        self._want_port = port
        self.port: int | None = None
        self.user = user
        self.password = password or secrets.token_urlsafe(18)
        self.bin_dir = Path(bin_dir) if bin_dir else None
        self.max_connections = max_connections
        self.tls = tls  # (certificate, key) PEM files: the server then also accepts TLS
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ install

    def ensure_installed(self, *, allow_apt: bool = True) -> Path:
        """Find the server binaries; install PostgreSQL with apt-get when absent and root."""
        t0 = time.monotonic()
        found = Path(self.bin_dir) if self.bin_dir else find_bin_dir()
        if found is None:
            if not allow_apt or os.geteuid() != 0 or not shutil.which("apt-get"):
                raise ToolMissingError(
                    "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH "
                    "or in /usr/lib/postgresql/*/bin. Install them, e.g. as root: "
                    "apt-get install -y --no-install-recommends postgresql "
                    "(or set POSTGRES_HOST/PORT/USER/PASSWORD to use an existing server)."
                )
            apt_install(["postgresql"])
            found = find_bin_dir()
            if found is None:
                raise InfraError("apt-get installed postgresql but initdb is still not found")
            self.timings["install_s"] = elapsed(t0)
            log.info("postgres.installed", bin_dir=str(found), seconds=self.timings["install_s"])
        self.bin_dir = found
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(PG_OS_USER)
            except KeyError:
                raise ToolMissingError(
                    "running as root, but there is no `postgres` OS user to run the server as "
                    "(it is created by the Debian postgresql package)"
                ) from None
            if not shutil.which("runuser"):
                raise ToolMissingError("running as root, but `runuser` (util-linux) is missing")
        return found

    # ------------------------------------------------------------------ paths

    @property
    def data_dir(self) -> Path:
        return self.work_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.work_dir / "postgres.log"

    @property
    def params(self) -> PostgresParams:
        if self.port is None:
            raise InfraError("LocalPostgres has not been started")
        return PostgresParams(LOOPBACK, self.port, self.user, self.password)

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def dsn(self, dbname: str = "postgres") -> str:
        return self.params.dsn(dbname)

    def create_database(self, name: str) -> str:
        return self.params.create_database(name)

    def drop_database(self, name: str) -> None:
        self.params.drop_database(name)

    # ------------------------------------------------------------------ helpers

    @property
    def _as_root(self) -> bool:
        return os.geteuid() == 0

    def _as_pg_user(self, argv: list[str]) -> list[str]:
        """Prefix ``argv`` with runuser when we are root (PostgreSQL refuses to run as root)."""
        if self._as_root:
            return ["runuser", "-u", PG_OS_USER, "--", *argv]
        return argv

    def _bin(self, name: str) -> str:
        if self.bin_dir is None:
            self.ensure_installed()
        assert self.bin_dir is not None
        return str(self.bin_dir / name)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8")
        env.pop("PGDATA", None)
        return env

    def _initdb(self) -> None:
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        pwfile = self.work_dir / ".pwfile"
        write_private(pwfile, self.password + "\n")
        if self._as_root:
            pw = pwd.getpwnam(PG_OS_USER)
            os.chown(self.work_dir, pw.pw_uid, pw.pw_gid)
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        t0 = time.monotonic()
        try:
            run_checked(
                self._as_pg_user(
                    [
                        self._bin("initdb"),
                        "-D",
                        str(self.data_dir),
                        "-U",
                        self.user,
                        f"--pwfile={pwfile}",
                        "--auth=scram-sha-256",
                        "--encoding=UTF8",
                        "--locale=C",
                    ]
                ),
                what="initdb",
                env=self._env(),
                cwd=self.work_dir,
                timeout=120,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        self.timings["initdb_s"] = elapsed(t0)

    def _launch(self, timeout: float) -> None:
        assert self.port
        argv = self._as_pg_user(
            [
                self._bin("postgres"),
                "-D",
                str(self.data_dir),
                "-c",
                f"listen_addresses={LOOPBACK}",
                "-c",
                f"port={self.port}",
                "-c",
                f"unix_socket_directories={self.data_dir}",
                "-c",
                "fsync=on",
                "-c",
                f"max_connections={self.max_connections}",
                "-c",
                "logging_collector=off",
                *self._tls_options(),
            ]
        )
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        t0 = time.monotonic()
        # SIGQUIT = immediate shutdown if the watchdog has to clean up after us.
        self._proc = spawn(
            argv, log_file=self.log_file, env=self._env(), first_signal=signal.SIGQUIT, grace=5
        )
        params = self.params
        deadline = t0 + timeout
        while True:
            if params.ping(timeout=2):
                break
            if self._proc.poll() is not None:
                code = self._proc.returncode
                terminate_group(self._proc, sig=signal.SIGKILL)
                self._proc = None
                out = read_from(self.log_file, self._log_offset)
                if ADDRESS_IN_USE in out:
                    raise _AddressInUseError(out[-3000:])
                if SHMEM_IN_USE in out or LOCK_FILE_EXISTS in out:
                    raise _LeftoversError(out[-3000:])
                raise InfraError(
                    f"PostgreSQL exited with code {code} during start-up; log {self.log_file}:\n{out[-3000:]}"
                )
            if time.monotonic() > deadline:
                out = read_from(self.log_file, self._log_offset)
                self.kill()
                raise TimeoutError(
                    f"PostgreSQL did not accept connections within {timeout:.0f}s; "
                    f"log {self.log_file}:\n{out[-3000:]}"
                )
            time.sleep(0.05)
        self.timings["launch_s"] = elapsed(t0)

    def _tls_options(self) -> list[str]:
        """`-c ssl=on ...` with copies of the certificate and key the server may read (the
        key: its own, mode 0600, as PostgreSQL requires)."""
        if self.tls is None:
            return []
        copies = []
        for source, name in zip(self.tls, ("server.crt", "server.key"), strict=True):
            copy = self.work_dir / name
            shutil.copyfile(source, copy)
            copy.chmod(0o600)
            if self._as_root:
                pw = pwd.getpwnam(PG_OS_USER)
                os.chown(copy, pw.pw_uid, pw.pw_gid)
            copies.append(copy)
        return ["-c", "ssl=on", "-c", f"ssl_cert_file={copies[0]}", "-c", f"ssl_key_file={copies[1]}"]

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 60, *, attempts: int = 5) -> PostgresParams:
        """initdb a fresh data dir, start on a free port, wait until it accepts logins."""
        if self.is_running:
            return self.params
        t_total = time.monotonic()
        self.ensure_installed()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._initdb()
        for attempt in range(1, attempts + 1):
            self.port = self._want_port or free_ports(1)[0]
            try:
                self._launch(timeout)
            except _AddressInUseError as exc:
                if self._want_port or attempt == attempts:
                    raise InfraError(f"PostgreSQL could not bind port {self.port}:\n{exc}") from None
                log.info("postgres.port_race_retry", attempt=attempt)
                continue
            break
        self.timings["start_s"] = self.timings["launch_s"]
        self.timings["total_s"] = elapsed(t_total)
        log.info(
            "postgres.started",
            dsn=f"postgresql://{self.user}:***@{LOOPBACK}:{self.port}/postgres",
            bin_dir=str(self.bin_dir),
            install_s=self.timings.get("install_s"),
            initdb_s=self.timings.get("initdb_s"),
            start_s=self.timings.get("start_s"),
            total_s=self.timings["total_s"],
            work_dir=str(self.work_dir),
        )
        return self.params

    def stop(self, timeout: float = 30) -> None:
        """``pg_ctl stop -m fast`` (SIGKILL of the process group if that does not work)."""
        if self._proc is None:
            return
        t0 = time.monotonic()
        if self._proc.poll() is None:
            try:
                run_checked(
                    self._as_pg_user(
                        [
                            self._bin("pg_ctl"),
                            "stop",
                            "-D",
                            str(self.data_dir),
                            "-m",
                            "fast",
                            "-w",
                            "-t",
                            str(int(timeout)),
                        ]
                    ),
                    what="pg_ctl stop",
                    env=self._env(),
                    cwd=self.work_dir,
                    timeout=timeout + 5,
                )
            except InfraError as exc:
                log.warning("postgres.pg_ctl_stop_failed", error=str(exc)[:500])
        # runuser exits once its child did; then make sure the group is gone.
        code = terminate_group(self._proc, sig=signal.SIGTERM, timeout=10)
        self._proc = None
        self.timings["stop_s"] = elapsed(t0)
        log.info("postgres.stopped", exit_code=code, seconds=self.timings["stop_s"])

    def kill(self) -> None:
        """SIGKILL the postmaster (and runuser) at once - a crash."""
        if self._proc is None:
            return
        postmaster = self._postmaster_pid()
        code = terminate_group(self._proc, sig=signal.SIGKILL)
        self._proc = None
        if postmaster:  # not our child (runuser's): wait until init has reaped it
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and _pid_exists(postmaster):
                time.sleep(0.05)
        log.info("postgres.killed", exit_code=code)

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def restart(self, timeout: float = 60) -> PostgresParams:
        """Start again on the SAME port and data dir (crash recovery after :meth:`kill`)."""
        if self.port is None or not self.data_dir.exists():
            raise InfraError("restart() needs a previous start()")
        self.stop()
        t0 = time.monotonic()
        deadline = t0 + timeout
        while True:
            try:
                self._launch(max(1.0, deadline - time.monotonic()))
                break
            except (_LeftoversError, _AddressInUseError):
                # A killed postmaster stays a zombie until init reaps it, and its backends
                # notice its death only within moments; until then postmaster.pid, the shared
                # memory segment or the socket still look in use.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.timings["restart_s"] = elapsed(t0)
        log.info("postgres.restarted", port=self.port, seconds=self.timings["restart_s"])
        return self.params

    def _describe(self) -> str:
        return f"port={self.port}"


class _AddressInUseError(InfraError):
    pass


class _LeftoversError(InfraError):
    pass


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def apt_install(packages: list[str]) -> None:
    """``apt-get update && apt-get install -y --no-install-recommends <packages>``, as root."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    t0 = time.monotonic()
    log.info("apt.install", packages=packages)
    run_checked(["apt-get", "update"], what="apt-get update", env=env, timeout=900)
    run_checked(
        ["apt-get", "install", "-y", "--no-install-recommends", *packages],
        what=f"apt-get install {' '.join(packages)}",
        env=env,
        timeout=1800,
    )
    log.info("apt.installed", packages=packages, seconds=elapsed(t0))
