"""Keeps the services of `./deploy/up` running, as a process supervisor would.

A service that exits (a crash, an out-of-memory kill, `kill -9`) is started again with the
same environment after a backoff: 1 s, then 2, 4, 8 ... up to 30 s while it keeps failing,
back to 1 s once a run has lasted a minute. Each exit and each restart is printed, with the
exit code or the signal. `./deploy/up --no-restart` turns restarting off: a service that
exits then stays down, and says so.

Each service runs in its own process group (so that stopping it stops whatever it started),
registered with the `Watchdog`, which kills the group should `up` itself die. Its output is
printed line by line with a `[name]` prefix.

Not a general process manager: one process per service, no readiness gating of others, no
limit on restarts (a service that cannot start keeps being tried every 30 s, and printing
why). In production the orchestrator does this (Kubernetes, systemd, compose `restart:`).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import typer

from deploy.local._proc import Watchdog, terminate_group


@dataclass(frozen=True)
class Backoff:
    """How long to wait before a restart: `first`, doubling with each exit in a row up to
    `cap`; a run of `stable_after` seconds or more starts the doubling again."""

    first: float = 1.0
    cap: float = 30.0
    stable_after: float = 60.0

    def delay(self, exits_in_a_row: int) -> float:
        return min(self.cap, self.first * 2 ** max(exits_in_a_row - 1, 0))


def exit_reason(code: int) -> str:
    """`exited with code 1`, or `was killed by SIGKILL` for a negative (signal) code."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Supervised:
    """One service process, restarted with a backoff when it exits (see the module doc).

    Not thread-safe: `start`, `check` and `stop` are called from one loop (`up`'s).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        cwd: Path | None = None,
        restart: bool = True,
        backoff: Backoff = Backoff(),
        health_url: str | None = None,
        say: Callable[[str, str], None] | None = None,
        output: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.restart = restart
        self.backoff = backoff
        self.health_url = health_url
        self.say = say or (lambda text, color: typer.secho(text, fg=color))
        self.output = output or _print_line
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0  # in all
        self.exits_in_a_row = 0
        self.last_exit: str | None = None
        self._started_at = 0.0
        self._due: float | None = None  # when a restart is due
        self._stopped = False
        self._pump: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        watchdog = Watchdog.get()  # before the child: no window in which it is not watched
        self.proc = subprocess.Popen(  # noqa: S603 - argv from fixed parts
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        watchdog.watch(self.proc.pid, signal.SIGTERM, 10)
        self._started_at = time.monotonic()
        self._pump = threading.Thread(target=self._pump_output, args=(self.proc,), daemon=True)
        self._pump.start()

    def check(self, now: float | None = None) -> None:
        """Notice an exit and schedule the restart, or restart when it is due. Call it often."""
        if self._stopped or self.proc is None:
            return
        now = time.monotonic() if now is None else now
        if self._due is not None:
            if now >= self._due:
                self._due = None
                self.restarts += 1
                self.start()
                self.say(f"{self.name} restarted (pid {self.proc.pid}, restart {self.restarts})", "yellow")
            return
        code = self.proc.poll()
        if code is None:
            return
        terminate_group(self.proc, sig=signal.SIGKILL)  # what it left in its group; unwatch it
        ran = now - self._started_at
        self.exits_in_a_row = 1 if ran >= self.backoff.stable_after else self.exits_in_a_row + 1
        self.last_exit = exit_reason(code)
        if not self.restart:
            self.say(f"{self.name} {self.last_exit} after {ran:.0f} s; not restarted (--no-restart)", "red")
            self._stopped = True
            return
        delay = self.backoff.delay(self.exits_in_a_row)
        self._due = now + delay
        self.say(f"{self.name} {self.last_exit} after {ran:.0f} s; restarting in {delay:g} s", "red")

    def stop(self) -> None:
        self._stopped = True
        self._due = None
        if self.proc is not None:
            terminate_group(self.proc, sig=signal.SIGTERM, timeout=10)
        if self._pump is not None:
            self._pump.join(timeout=2)

    # ------------------------------------------------------------------ state

    @property
    def stopped(self) -> bool:
        """Stopped, or exited for good (--no-restart)."""
        return self._stopped

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def answers(self, timeout: float = 1.0) -> bool:
        """Whether it is running and its HTTP API answers `health_url` with 200."""
        if not self.running or self.health_url is None:
            return False
        try:
            with urllib.request.urlopen(self.health_url, timeout=timeout) as response:  # noqa: S310 - http://127.0.0.1
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def state(self) -> str:
        """For the banner: up, starting, restarting, or down, and why."""
        if self._due is not None:
            return f"down ({self.last_exit}; restarting)"
        if not self.running:
            return f"down ({self.last_exit or 'not started'})"
        return "up" if self.answers() else "starting (no answer yet)"

    def _pump_output(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, b""):
            self.output(f"[{self.name:>8}] " + line.decode("utf-8", "replace"))


def _print_line(line: str) -> None:
    prefix, _, rest = line.partition("] ")
    sys.stdout.write(typer.style(prefix + "] ", fg="cyan") + rest)
    sys.stdout.flush()


def wait_until_up(services: Sequence[Supervised], timeout: float) -> None:
    """Until every service answers, or exited without a restart, or `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for service in services:
            service.check()
        pending = [s for s in services if not s.stopped and not s.answers(timeout=0.5)]
        if not pending:
            return
        time.sleep(0.5)
