"""`backbone.runtime.limit_malloc_arenas`: a service's threads share at most MALLOC_ARENAS of
glibc's malloc arenas (each its own otherwise), so that memory one thread frees is reused by the
others rather than kept (see "Memory over a soak" in docs/performance.md). Checked in a fresh process, as
a service starts: threads allocate, then glibc's own report (malloc_info) counts the heaps.

`backbone.runtime.malloc_trim`, which a running service calls every MALLOC_TRIM_SECONDS: the
memory glibc keeps free in the middle of its heap goes back to the system (RSS falls)."""

import subprocess
import sys

import pytest

from tests.support.system import REPO

CHILD = """
import ctypes, os, sys, tempfile, threading
from backbone.runtime import limit_malloc_arenas
limited = limit_malloc_arenas() if sys.argv[1] == "limit" else None
held = []
together = threading.Barrier(6)
def allocate():
    # All six alive at once: glibc hands an exited thread's arena to the next thread, so
    # threads that ran one after the other would share one whatever the limit.
    together.wait()
    held.extend(bytearray(4096) for _ in range(200))  # (above Python's small-object allocator)
    together.wait()
threads = [threading.Thread(target=allocate) for _ in range(6)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(None)
libc.fdopen.restype = ctypes.c_void_p
libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
libc.fclose.argtypes = (ctypes.c_void_p,)
with tempfile.TemporaryFile() as out:
    stream = libc.fdopen(os.dup(out.fileno()), b"w")
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    out.seek(0)
    print(limited, out.read().count(b"<heap nr="))
"""


def heaps(mode: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    done = subprocess.run(  # (our interpreter, our code)
        [sys.executable, "-c", CHILD, mode], cwd=REPO, capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    limited, count = done.stdout.split()
    return limited, int(count)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_threads_share_at_most_two_arenas():
    import os

    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert heaps("free", env)[1] > 2  # (glibc's default: an arena per thread, up to 8 per core)
    assert heaps("limit", env) == ("True", 2)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_malloc_arena_max_in_the_environment_wins():
    import os

    limited, count = heaps("limit", {**os.environ, "MALLOC_ARENA_MAX": "3"})
    assert limited == "False" and count <= 3


TRIM_CHILD = """
import gc
from backbone.runtime import malloc_trim
def rss():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
held = [b"x" * 32768 for _ in range(2048)]  # 64 MiB in malloc's heap (below its mmap threshold)
del held[:-1]  # all but the last: the top of the heap stays in use, so free() gives nothing back
gc.collect()
kept = rss()
print(malloc_trim(), kept, rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_malloc_trim_gives_back_what_glibc_keeps_free():
    done = subprocess.run(
        [sys.executable, "-c", TRIM_CHILD], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    released, kept, after = done.stdout.split()
    assert released == "True"
    assert int(kept) - int(after) > 48 * 2**20  # most of the 64 MiB freed
