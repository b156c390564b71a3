"""The server's garbage-collector policy: after a slow full collection the survivors are frozen,
so the next full collection is fast (run in a process of its own: freezing is process-wide)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = """
import gc, sys, time
sys.path.insert(0, {root!r})
from neurolabel.service import heap

heap.freeze_after_slow_collections()
heap.freeze_after_slow_collections()  # installed once
assert gc.callbacks.count(heap._on_collection) == 1
gc.disable()  # no automatic collection while the heap grows: the explicit one below is the slow one
kept = [[i] for i in range(400_000)]  # a long-lived heap, as a loaded model leaves behind
gc.enable()
t = time.thread_time(); gc.collect(); slow = time.thread_time() - t
frozen = gc.get_freeze_count()
t = time.thread_time(); gc.collect(); fast = time.thread_time() - t
print(heap.freezes(), frozen >= 400_000, slow > heap.SLOW_CPU_S, fast < slow / 5, len(kept))
"""


def test_survivors_of_a_slow_full_collection_are_frozen() -> None:
    out = subprocess.run([sys.executable, "-c", _SCRIPT.format(root=str(ROOT))], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "True", "True", "True", "400000"]


def test_a_settled_server_collects_young_objects_every_10000_allocations() -> None:
    script = (f"import gc, sys; sys.path.insert(0, {str(ROOT)!r})\n"
              "from neurolabel.service import heap\n"
              "assert gc.get_threshold()[0] == 700\n"
              "heap.settle()\n"
              "print(gc.get_threshold()[0] == heap.YOUNG_THRESHOLD == 10_000, gc.get_freeze_count() > 0)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]
