"""A throw-away Redis server from the distribution's `redis-server`, no Docker.

    redis = LocalRedis()
    redis.ensure_installed()     # finds redis-server; apt-get installs it if root
    params = redis.start()       # fresh dir, 127.0.0.1:<free port>, a password, wait for PING
    params.url                   # redis://:<password>@127.0.0.1:<port>/0
    redis.kill(); redis.restart()  # a crash, and a start on the same port (counters gone)
    redis.pause(); redis.resume()  # SIGSTOP / SIGCONT: a server that stops answering
    redis.close()

What the accounts service keeps there (the shared rate limits' counters) is worth little after
a restart, so the server persists nothing: no RDB snapshots, no append-only file. The password
is in a 0600 config file inside the work dir, never on the command line.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
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
    spawn,
    terminate_group,
    write_private,
)
from deploy.local.postgres import apt_install

ADDRESS_IN_USE = "Address already in use"


@dataclass(frozen=True)
class RedisParams:
    """Where a Redis server is and its password (the same object whether the server is external,
    REDIS_URL, or a :class:`LocalRedis`)."""

    host: str
    port: int
    password: str = ""
    db: int = 0

    @property
    def url(self) -> str:
        """``redis://:<password>@host:port/db``, as redis-py's ``from_url`` reads it."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/{self.db}"

    @property
    def rate_limit_storage(self) -> str:
        """The value of the accounts service's RATE_LIMIT_STORAGE setting for this server."""
        return "async+" + self.url

    def ping(self, timeout: float = 1.0) -> bool:
        """A raw RESP ``AUTH`` + ``PING`` over a socket (no client library needed)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as s:
                s.settimeout(timeout)
                if self.password:
                    s.sendall(_command("AUTH", self.password))
                    if not _reply(s).startswith(b"+OK"):
                        return False
                s.sendall(_command("PING"))
                return _reply(s).startswith(b"+PONG")
        except OSError:
            return False


def _command(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _reply(s: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = s.recv(256)
        if not chunk:
            break
        data += chunk
    return data


def find_redis_server() -> Path | None:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    return Path(found) if found else None


class LocalRedis(LocalServer):
    """A Redis server in a fresh work dir on 127.0.0.1:<free port>, password required, nothing
    persisted. It runs in its own process group, registered with the orphan watchdog (see
    ``_watchdog.py``), and the work dir is deleted even if the caller crashes."""

    work_dir_prefix = "booking-redis-"

    def __init__(
        self,
        *,
        work_dir: Path | str | None = None,
        port: int = 0,
        password: str | None = None,
        binary: Path | str | None = None,
    ) -> None:
        self._work_dir = Path(work_dir) if work_dir else None
        self._owns_work_dir = work_dir is None
        self._want_port = port
        self.port: int | None = None
        self.password = password if password is not None else secrets.token_urlsafe(18)
        self.binary = Path(binary) if binary else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ install

    def ensure_installed(self, *, allow_apt: bool = True) -> Path:
        """Find redis-server; install Debian's `redis-server` with apt-get when absent and root."""
        t0 = time.monotonic()
        found = self.binary or find_redis_server()
        if found is None:
            if not allow_apt or os.geteuid() != 0 or not shutil.which("apt-get"):
                raise ToolMissingError(
                    "redis-server not found on PATH. Install it, e.g. as root: "
                    "apt-get install -y --no-install-recommends redis-server "
                    "(or set REDIS_URL to use an existing server)."
                )
            apt_install(["redis-server"])
            found = find_redis_server()
            if found is None:
                raise InfraError("apt-get installed redis-server but it is still not found")
            self.timings["install_s"] = elapsed(t0)
            log.info("redis.installed", binary=str(found), seconds=self.timings["install_s"])
        self.binary = found
        return found

    # ------------------------------------------------------------------ paths

    @property
    def log_file(self) -> Path:
        return self.work_dir / "redis.log"

    @property
    def params(self) -> RedisParams:
        if self.port is None:
            raise InfraError("LocalRedis has not been started")
        return RedisParams(LOOPBACK, self.port, self.password)

    @property
    def url(self) -> str:
        return self.params.url

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.is_running and self._proc else None

    # ------------------------------------------------------------------ lifecycle

    def _config(self) -> Path:
        assert self.port
        config = self.work_dir / "redis.conf"
        lines = [
            f"bind {LOOPBACK}",
            f"port {self.port}",
            "protected-mode yes",
            "daemonize no",
            f'dir "{self.work_dir}"',
            'logfile ""',  # stdout, which spawn() appends to redis.log
            'save ""',  # no snapshots: nothing here is worth keeping across a restart
            "appendonly no",
            f'requirepass "{self.password}"',
        ]
        write_private(config, "\n".join(lines) + "\n")
        return config

    def _launch(self, timeout: float) -> None:
        if self.binary is None:
            self.ensure_installed()
        assert self.binary is not None
        config = self._config()
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        t0 = time.monotonic()
        self._proc = spawn(
            [str(self.binary), str(config)], log_file=self.log_file, cwd=self.work_dir, grace=5
        )
        params = self.params
        deadline = t0 + timeout
        while not params.ping(timeout=1):
            if self._proc.poll() is not None:
                code = self._proc.returncode
                terminate_group(self._proc, sig=signal.SIGKILL)
                self._proc = None
                out = read_from(self.log_file, self._log_offset)
                if ADDRESS_IN_USE in out:
                    raise _AddressInUseError(out[-3000:])
                raise InfraError(f"redis-server exited with code {code}; log {self.log_file}:\n{out[-3000:]}")
            if time.monotonic() > deadline:
                out = read_from(self.log_file, self._log_offset)
                self.kill()
                raise TimeoutError(f"Redis did not answer PING within {timeout:.0f}s; log:\n{out[-3000:]}")
            time.sleep(0.02)
        self.timings["launch_s"] = elapsed(t0)

    def start(self, timeout: float = 30, *, attempts: int = 5) -> RedisParams:
        """Start on a free port (or the one asked for) and wait until it answers PING."""
        if self.is_running:
            return self.params
        t0 = time.monotonic()
        self.ensure_installed()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, attempts + 1):
            self.port = self._want_port or free_ports(1)[0]
            try:
                self._launch(timeout)
            except _AddressInUseError as exc:
                if self._want_port or attempt == attempts:
                    raise InfraError(f"Redis could not bind port {self.port}:\n{exc}") from None
                continue
            break
        self.timings["start_s"] = elapsed(t0)
        log.info(
            "redis.started", url=f"redis://:***@{LOOPBACK}:{self.port}/0", seconds=self.timings["start_s"]
        )
        return self.params

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM (Redis shuts down cleanly), SIGKILL after ``timeout``."""
        if self._proc is None:
            return
        self.resume()  # a stopped process would not act on SIGTERM
        code = terminate_group(self._proc, sig=signal.SIGTERM, timeout=timeout)
        self._proc = None
        log.info("redis.stopped", exit_code=code)

    def kill(self) -> None:
        """SIGKILL at once - a crash. Every counter is gone (nothing is persisted)."""
        if self._proc is None:
            return
        code = terminate_group(self._proc, sig=signal.SIGKILL)
        self._proc = None
        log.info("redis.killed", exit_code=code)

    def restart(self, timeout: float = 30) -> RedisParams:
        """Start again on the SAME port and password (after :meth:`kill` or :meth:`stop`)."""
        if self.port is None:
            raise InfraError("restart() needs a previous start()")
        self.stop()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._launch(max(1.0, deadline - time.monotonic()))
                break
            except _AddressInUseError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        log.info("redis.restarted", port=self.port)
        return self.params

    def pause(self) -> None:
        """SIGSTOP: the server keeps its port open and answers nothing (a stalled host)."""
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGCONT)

    def _describe(self) -> str:
        return f"port={self.port}"


class _AddressInUseError(InfraError):
    pass
