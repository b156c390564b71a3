"""Which ontology a label refers to: an ontology's name and a hash of its content, so that a stored
class expression is never scored or rendered against another ontology than the one it was
written in."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

_lock = threading.Lock()
_hashes: dict[int, tuple[Any, str]] = {}


def content_hash(ontology: Any) -> str:
    """SHA-256 (hex) of an :class:`ontology.model.Ontology`'s content: class IRIs, labels and
    superclass edges, in class order (the same classes read from RDF/XML or Turtle hash alike).
    Cached per ontology object."""
    with _lock:
        got = _hashes.get(id(ontology))
        if got is not None and got[0] is ontology:
            return got[1]
    h = hashlib.sha256()
    ptr, idx = ontology.parent_ptr, ontology.parent_idx
    for i, iri in enumerate(ontology.iris):
        h.update(iri.encode("utf-8"))
        h.update(b"\x1f")
        h.update("\x1e".join(ontology.labels[i]).encode("utf-8"))
        h.update(b"\x1f")
        h.update(idx[ptr[i]:ptr[i + 1]].astype("<i8").tobytes())
        h.update(b"\n")
    digest = h.hexdigest()
    with _lock:
        _hashes[id(ontology)] = (ontology, digest)
    return digest


def identity(ontology: Any) -> tuple[str, str]:
    """``(name, content hash)`` of an :class:`ontology.model.Ontology`."""
    return str(ontology.name), content_hash(ontology)


def check_same(explanation: Any, ontology: Any, *, what: str) -> None:
    """Raise :class:`core.errors.ScoringError` when ``explanation`` records another ontology
    (by content hash) than ``ontology``: its class expression would mean something else there."""
    from neurolabel.core.errors import ScoringError

    want = getattr(explanation, "ontology_hash", None)
    if want and want != content_hash(ontology):
        raise ScoringError(
            f"{what}: the label of neuron {explanation.neuron} by {explanation.explainer!r} refers to ontology "
            f"{explanation.ontology!r} (content {want[:12]}…), not {ontology.name!r} "
            f"(content {content_hash(ontology)[:12]}…): score it in a run over that ontology (--ontology)")


__all__ = ["check_same", "content_hash", "identity"]
