"""Garbage-collector policy of a server process: no full-collection pauses of a loaded heap.

A full (generation 2) collection walks every container object alive. Once the embedding model
is loaded a server holds ~480k of them and each full collection stopped every request for
0.3–1.1 s (measured under ``bench/service.py`` on this 2-core machine: 11 of them in a minute
of reads, the p99 of every read scenario). Objects that survived a slow full collection are
the long-lived heap (models, ontologies, modules): :func:`freeze_after_slow_collections`
moves them, after such a collection, to the permanent generation (``gc.freeze``), which later
collections skip. Reference counting still frees them; only cyclic garbage among them stays.
A full collection of a settled heap is fast, so this happens once or twice per heavy load
(the embedder, an ontology), not in steady state."""

from __future__ import annotations

import gc
import threading
import time

SLOW_CPU_S = 0.005
"""A full collection that took more CPU time than this freezes the survivors (a settled
server's take ~2 ms)."""

_installed = threading.Lock()
_state = {"installed": False, "started": 0.0, "freezes": 0}


def _on_collection(phase: str, info: dict) -> None:
    if info.get("generation") != 2:
        return
    if phase == "start":
        _state["started"] = time.thread_time()
    elif time.thread_time() - _state["started"] > SLOW_CPU_S:
        gc.freeze()  # the survivors of the collection that just ended: a plain list merge
        _state["freezes"] += 1


def freeze_after_slow_collections() -> None:
    """Install the policy in this process (once; later calls do nothing)."""
    with _installed:
        if not _state["installed"]:
            gc.callbacks.append(_on_collection)
            _state["installed"] = True


def settle() -> None:
    """Collect once and freeze what survives (a server after its start-up imports)."""
    gc.collect()
    gc.freeze()


def freezes() -> int:
    """How many times the heap was frozen in this process."""
    return _state["freezes"]
