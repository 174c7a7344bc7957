"""`backbone.runtime.freeze_startup_objects`: what a service holds once built is moved out of the
cyclic garbage collector's full collections; garbage made afterwards, cycles included, is still
collected. Checked in a fresh process, as a service starts (a frozen test process would keep
every later test's objects out of reach too)."""

import subprocess
import sys

from tests.support.system import REPO

CHILD = """
import gc, weakref
import backbone.runtime, sqlalchemy, pydantic  # what a service imports, roughly
from backbone.runtime import freeze_startup_objects
class Node: pass
frozen = freeze_startup_objects()
a, b = Node(), Node()
a.other, b.other = b, a  # a cycle made after the start: only the collector frees it
gone = weakref.ref(a)
del a, b
gc.collect()
print(frozen, gc.get_freeze_count() == frozen, gone() is None)
"""


def test_what_the_service_holds_at_start_is_frozen_and_later_cycles_are_still_collected():
    run = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    frozen, unchanged, collected = run.stdout.split()
    assert int(frozen) > 10_000 and unchanged == "True" and collected == "True"
