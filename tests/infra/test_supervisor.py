"""The supervisor of `./deploy/up` (deploy/local/supervisor.py) with real processes: a service
killed with kill -9 comes back after a backoff that grows while it keeps dying, each exit and
restart is said, and --no-restart leaves it down."""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
import uuid

import pytest

from backbone.credentials import load_or_create_signing_key, public_path
from backbone.signing import key_settings
from deploy.local.__main__ import SERVICES, service_env
from deploy.local._proc import free_ports
from deploy.local.supervisor import Backoff, Supervised, wait_until_up

SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)"]
FAST = Backoff(first=0.2, cap=0.8, stable_after=3.0)


class Said:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.output: list[str] = []

    def __call__(self, text: str, color: str) -> None:
        self.lines.append(text)


def supervised(argv=SLEEPER, **options) -> tuple[Supervised, Said]:
    said = Said()
    service = Supervised("sleeper", argv, dict(os.environ), say=said, output=said.output.append, **options)
    return service, said


def until(condition, service: Supervised, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        service.check()
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def kill9_and_wait_for_restart(service: Supervised, said: Said) -> float:
    """kill -9 the service; returns how long it stayed down."""
    old = service.proc.pid
    until(lambda: any("up" in line for line in said.output), service, what="the first output")
    os.kill(old, signal.SIGKILL)
    killed = time.monotonic()
    until(lambda: service.running and service.proc.pid != old, service, what="the restart")
    return time.monotonic() - killed


def test_a_killed_service_is_restarted_with_a_growing_backoff_and_each_restart_is_said():
    service, said = supervised(backoff=FAST)
    service.start()
    try:
        downtimes = []
        for _ in range(4):
            said.output.clear()
            downtimes.append(kill9_and_wait_for_restart(service, said))
        assert service.restarts == 4 and service.exits_in_a_row == 4
        exits = [line for line in said.lines if "was killed by SIGKILL" in line]
        assert [line.rsplit("restarting in ", 1)[1] for line in exits] == ["0.2 s", "0.4 s", "0.8 s", "0.8 s"]
        assert [line for line in said.lines if "restarted (pid" in line][-1].endswith("restart 4)")
        assert downtimes[0] >= 0.2 and downtimes[2] >= 0.8  # waited, did not spin
        assert service.state() in ("up", "starting (no answer yet)")  # no health URL: never "up"
    finally:
        service.stop()
    assert not service.running


def test_a_service_that_stayed_up_long_enough_starts_from_the_first_delay_again():
    service, said = supervised(backoff=Backoff(first=0.2, cap=5.0, stable_after=1.0))
    service.start()
    try:
        kill9_and_wait_for_restart(service, said)
        said.output.clear()
        kill9_and_wait_for_restart(service, said)  # quickly again: doubled
        said.output.clear()
        time.sleep(1.2)  # a stable run
        kill9_and_wait_for_restart(service, said)
        delays = [line.rsplit("restarting in ", 1)[1] for line in said.lines if "restarting in" in line]
        assert delays == ["0.2 s", "0.4 s", "0.2 s"]
    finally:
        service.stop()


def test_a_service_that_fails_by_itself_is_restarted_too_and_its_exit_code_said():
    crashing = [sys.executable, "-c", "import sys; print('up', flush=True); sys.exit(3)"]
    service, said = supervised(crashing, backoff=FAST)
    service.start()
    try:
        until(lambda: service.restarts >= 2, service, what="two restarts")
        assert any(line.startswith("sleeper exited with code 3 after") for line in said.lines)
    finally:
        service.stop()


def test_no_restart_leaves_a_killed_service_down_and_says_so():
    service, said = supervised(restart=False, backoff=FAST)
    service.start()
    try:
        until(lambda: bool(said.output), service, what="output")
        os.kill(service.proc.pid, signal.SIGKILL)
        until(lambda: service.stopped, service, what="the exit noticed")
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # well past the backoff: still down
            service.check()
            time.sleep(0.05)
        assert not service.running and service.restarts == 0
        assert said.lines == [said.lines[0]] and "not restarted (--no-restart)" in said.lines[0]
        assert service.state() == "down (was killed by SIGKILL)"
    finally:
        service.stop()


def test_stopping_ends_the_whole_process_group_and_restarts_nothing(tmp_path):
    pid_file = tmp_path / "child.pid"
    spawning = [
        sys.executable,
        "-c",
        "import subprocess, sys, time; "
        f"c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        f"open({str(pid_file)!r}, 'w').write(str(c.pid)); print('up', flush=True); time.sleep(600)",
    ]
    service, _ = supervised(spawning, backoff=FAST)
    service.start()
    until(lambda: pid_file.exists() and pid_file.read_text(), service, what="the child")
    child = int(pid_file.read_text())
    service.stop()
    service.check()
    assert not service.running and service.restarts == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for this purpose
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.integration
def test_the_bookings_service_killed_with_kill_9_under_the_supervisor_comes_back(
    tmp_path, kafka_bootstrap_servers
):
    """The real service, as `./deploy/up` runs it: kill -9, restarted, answering again."""
    signing = tmp_path / "keys" / "session-signing-key.pem"
    load_or_create_signing_key(signing)
    [spec] = [s for s in SERVICES if s.name == "bookings"]
    spec = dataclasses.replace(spec, http_port=free_ports(1)[0])
    caller = {**os.environ, "TOPIC_NAMESPACE": f"sup-{uuid.uuid4().hex[:8]}", "LOG_LEVEL": "WARNING"}
    env = service_env(
        spec,
        kafka_bootstrap_servers,
        caller,
        tmp_path,
        {
            "SESSION_PUBLIC_KEY_FILE": str(public_path(signing)),
            **{k.upper(): str(v) for k, v in key_settings(tmp_path / "keys" / "bus", "bookings").items()},
        },
    )
    said = Said()
    service = Supervised(
        "bookings",
        [sys.executable, "-m", spec.module],
        env,
        backoff=Backoff(first=0.5),
        health_url=f"http://127.0.0.1:{spec.http_port}/health",
        say=said,
        output=said.output.append,
    )
    service.start()
    try:
        wait_until_up([service], timeout=120)
        assert service.state() == "up", said.output
        first = service.proc.pid
        os.kill(first, signal.SIGKILL)
        until(
            lambda: service.restarts == 1 and service.answers(), service, timeout=120, what="answering again"
        )
        assert service.state() == "up" and service.proc.pid != first
        assert said.lines[0].startswith("bookings was killed by SIGKILL after")
        assert said.lines[1].startswith("bookings restarted (pid")
    finally:
        service.stop()
