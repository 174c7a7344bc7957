"""Orphan killer for the local infrastructure processes (Kafka JVM, PostgreSQL).

Run as a separate process by ``deploy.local._proc.Watchdog`` with a pipe on stdin whose
write end only the owning Python process holds. Protocol, one command per line:

    watch <pgid> <first signal number> <grace seconds>
    unwatch <pgid>
    cleanup <directory>        (delete it too if the owner dies; the path is the rest of the line)
    keep <directory>

When stdin reaches EOF *without* a preceding ``bye`` line, the owner has died (crash,
SIGKILL, OOM kill, ...). The watchdog then sends the first signal to every watched
process group, waits up to the grace period and SIGKILLs whatever is left.

This works per *process* (a pipe closes only when the process dies), unlike
``prctl(PR_SET_PDEATHSIG)``, which fires when the *thread* that forked the child exits and
is cleared by a uid change (runuser) - both would bite here (fixtures start brokers from
worker threads; PostgreSQL runs as the ``postgres`` user).

Deliberately stdlib-only and started with ``python -I -S``: it must not import the project.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main() -> int:
    # Own session (see the caller), but also ignore terminal-style signals: Ctrl-C in the
    # owner's terminal must not take the watchdog down before the owner has cleaned up.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    watched: dict[int, tuple[int, float]] = {}
    cleanup: set[str] = set()
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:
            break
        text = line.decode("utf-8", "surrogateescape").rstrip("\n")
        parts = text.split()
        if not parts:
            continue
        if parts[0] == "bye":
            return 0
        if parts[0] in ("cleanup", "keep"):
            path = text.split(" ", 1)[1] if " " in text else ""
            if path and parts[0] == "cleanup":
                cleanup.add(path)
            else:
                cleanup.discard(path)
            continue
        try:
            if parts[0] == "watch" and len(parts) == 4:
                watched[int(parts[1])] = (int(parts[2]), float(parts[3]))
            elif parts[0] == "unwatch" and len(parts) == 2:
                watched.pop(int(parts[1]), None)
        except ValueError:
            continue

    # The owner is gone: clean up.
    _kill_all(watched)
    for path in cleanup:
        shutil.rmtree(path, ignore_errors=True)
    return 0


def _kill_all(watched: dict[int, tuple[int, float]]) -> None:
    if not watched:
        return
    for pgid, (sig, _grace) in watched.items():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
    deadline = time.monotonic() + max(grace for _sig, grace in watched.values())
    while time.monotonic() < deadline and any(_alive(p) for p in watched):
        time.sleep(0.1)
    for pgid in watched:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
