"""Small process and network helpers shared by LocalKafka, LocalPostgres and the CLI."""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Self

import structlog

log = structlog.get_logger("deploy.local")

LOOPBACK = "127.0.0.1"


class InfraError(RuntimeError):
    """A local infrastructure component could not be set up or started."""


class ToolMissingError(InfraError):
    """A required external program (mvn, java, initdb, ...) is not installed."""


# --------------------------------------------------------------------------- ports


def free_ports(count: int = 1, host: str = LOOPBACK) -> list[int]:
    """Return ``count`` distinct TCP ports that were free a moment ago.

    All sockets are held open until every port has been chosen, so the ports differ. There is
    an unavoidable race with other processes between this call and the real bind: callers
    retry on "Address already in use".
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def can_connect(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
    abort: Callable[[], str | None] | None = None,
) -> None:
    """Poll ``condition`` until true; raise TimeoutError after ``timeout`` seconds.

    ``abort`` may return an error message to stop waiting early (e.g. the process died).
    """
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if abort is not None and (reason := abort()):
            raise InfraError(reason)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------- watchdog


class Watchdog:
    """Process-wide helper process that kills our children's process groups if we die.

    One per Python process, started on first use. See ``_watchdog.py`` for the protocol and
    for why this is used instead of ``prctl(PR_SET_PDEATHSIG)``.
    """

    _instance: Watchdog | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        script = Path(__file__).with_name("_watchdog.py")
        # stdin=PIPE: the write end stays in this process only (non-inheritable fds and
        # close_fds=True for every other child), so EOF <=> this process is gone.
        self._proc = subprocess.Popen(  # noqa: S603 - fixed argv
            [sys.executable, "-I", "-S", str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )

    @classmethod
    def get(cls) -> Watchdog:
        with cls._instance_lock:
            inst = cls._instance
            if inst is None or inst._pid != os.getpid() or inst._proc.poll() is not None:
                inst = cls._instance = Watchdog()
            return inst

    def _send(self, line: str) -> None:
        with self._lock:
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.write(line.encode("utf-8", "surrogateescape") + b"\n")
                self._proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                log.warning("watchdog.gone", pid=self._proc.pid)

    def watch(self, pgid: int, first_signal: int = signal.SIGTERM, grace: float = 5.0) -> None:
        self._send(f"watch {pgid} {int(first_signal)} {grace}")

    def unwatch(self, pgid: int) -> None:
        self._send(f"unwatch {pgid}")

    def cleanup_dir(self, path: Path) -> None:
        """Delete ``path`` too if this process dies (after its process groups are killed)."""
        self._send(f"cleanup {path}")

    def keep_dir(self, path: Path) -> None:
        self._send(f"keep {path}")

    @property
    def pid(self) -> int:
        return self._proc.pid


# --------------------------------------------------------------------------- processes


def spawn(
    argv: Sequence[str],
    *,
    log_file: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    first_signal: int = signal.SIGTERM,
    grace: float = 5.0,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own process group, stdout+stderr appended to ``log_file``.

    The group is registered with the process-wide :class:`Watchdog`, so it is killed if this
    Python process dies without stopping it. Call :func:`terminate_group` (or at least
    ``Watchdog.get().unwatch(proc.pid)`` after the process ended) to stop it.
    """
    watchdog = Watchdog.get()  # start it before the child, so there is no unwatched window
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - argv built by the caller from fixed parts
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,  # own session and process group (pgid == pid)
            close_fds=True,
        )
    watchdog.watch(proc.pid, first_signal, grace)
    return proc


def terminate_group(
    proc: subprocess.Popen[Any],
    *,
    sig: int = signal.SIGTERM,
    timeout: float = 30.0,
) -> int | None:
    """Send ``sig`` to the process group of ``proc``; SIGKILL the group after ``timeout``.

    ``sig=SIGKILL`` kills at once. Returns the exit code. Safe to call twice.
    """
    pgid = proc.pid
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        try:
            proc.wait(timeout=timeout if sig != signal.SIGKILL else 10)
        except subprocess.TimeoutExpired:
            log.warning("process.kill_after_timeout", pid=proc.pid, timeout_s=timeout)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            proc.wait()
    # Leftovers in the group (children of the leader) die with it too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    Watchdog.get().unwatch(pgid)
    return proc.returncode


def read_from(path: Path, offset: int) -> str:
    """The text of ``path`` from byte ``offset`` on ('' if it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def tail(path: Path, offset: int = 0, max_chars: int = 4000) -> str:
    text = read_from(path, offset)
    return text[-max_chars:]


def run_checked(
    argv: Sequence[str],
    *,
    what: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    stdout: IO[Any] | int | None = subprocess.PIPE,
) -> subprocess.CompletedProcess[str]:
    """Run a short command; raise InfraError with its output if it fails."""
    try:
        res = subprocess.run(  # noqa: S603
            list(argv),
            env=env,
            cwd=cwd,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise InfraError(f"{what} timed out after {timeout}s: {' '.join(argv)}") from exc
    if res.returncode != 0:
        out = (res.stdout or "")[-4000:]
        raise InfraError(f"{what} failed (exit {res.returncode}): {' '.join(argv)}\n{out}")
    return res


def elapsed(t0: float) -> float:
    return round(time.monotonic() - t0, 2)


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, 0600 from its creation (never chmodded after):
    under a temporary name, then renamed into place."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


class LocalServer(abc.ABC):
    """What the throw-away local servers (`LocalKafka`, `LocalPostgres`, `LocalRedis`) share:
    a temporary work dir unless given one, `close` (stop, and delete a work dir they made), the
    log's tail, `with`, and a last-resort kill of the process group. Each sets `_proc`,
    `_work_dir`, `_owns_work_dir` and `work_dir_prefix`, and has `start`, `stop`, `is_running`,
    `log_file` and `_describe` (for repr)."""

    _proc: subprocess.Popen[bytes] | None
    _work_dir: Path | None
    _owns_work_dir: bool

    @abc.abstractmethod
    def start(self, *args: Any, **kwargs: Any) -> Any: ...

    @abc.abstractmethod
    def stop(self, *args: Any, **kwargs: Any) -> None: ...

    @property
    @abc.abstractmethod
    def is_running(self) -> bool: ...

    @property
    @abc.abstractmethod
    def log_file(self) -> Path: ...

    work_dir_prefix = "booking-"  # of the temporary work dir (when none was given)

    @property
    def work_dir(self) -> Path:
        if self._work_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix=self.work_dir_prefix))
            Watchdog.get().cleanup_dir(self._work_dir)  # deleted even if we crash
        return self._work_dir

    def _describe(self) -> str:
        return ""

    def close(self) -> None:
        """Stop, and delete the work dir if it was a temporary one."""
        self.stop()
        if self._owns_work_dir and self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            Watchdog.get().keep_dir(self._work_dir)
            self._work_dir = None

    def log_tail(self, max_chars: int = 4000) -> str:
        return tail(self.log_file, 0, max_chars)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # last resort; the watchdog covers interpreter death
        with contextlib.suppress(Exception):
            if self._proc is not None and self._proc.poll() is None:
                terminate_group(self._proc, sig=signal.SIGKILL)

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<{type(self).__name__} {state} {self._describe()}>"
