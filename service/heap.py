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

YOUNG_THRESHOLD = 10_000
"""Net allocations between young collections in a server process (Python's default: 700).

A request allocates a few hundred to ~1,000 container objects (a neuron's answer: its 30
windows' rows and dicts) and frees them when it ends; at 700 a young collection often ran in the
middle of a request, scanned what was alive then, and promoted it, leading to the older
collections. Measured under ``bench/service.py``'s neuron lookups and mixed reads (16 clients,
PostgreSQL, loaded 2-core machine): the collector took 0.061-0.074 ms of each request (280-310
young, 25-29 middle and 2-3 full collections per ~2,000 requests, one full collection 9.8 ms);
with 10,000, 0-1 young collections in ~3,000 requests (0.000-0.001 ms a request). The labelling
run's collector setting (``pipeline.run._settle_gc``) is the same and restores what it found."""

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
    """Collect once and freeze what survives (a server after its start-up imports); young
    collections every :data:`YOUNG_THRESHOLD` net allocations from now on."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def freezes() -> int:
    """How many times the heap was frozen in this process."""
    return _state["freezes"]
