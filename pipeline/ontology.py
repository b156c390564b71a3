"""The ontology of a run: the default WordNet one or a user ontology file, shared by the run's
explainers and symbolic simulators, and identified by name and content hash so that a stored
label is never scored or rendered against another ontology than the one it was written in."""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from neurolabel.pipeline.spec import DEFAULT_ONTOLOGY


@dataclass(frozen=True)
class RunOntology:
    """The ontology a run uses."""

    spec: str
    """``default`` or the ontology file's path."""
    annotator: Any = field(default=None, compare=False, repr=False)
    """:class:`ontology.annotate.Annotator` over a user ontology; ``None`` for the default (each
    plugin's factory then loads the shared default annotator)."""

    @property
    def key(self) -> str:
        """Cache key of the plugins built over it."""
        return self.spec


_lock = threading.Lock()
_loaded: dict[tuple[str, int, int], RunOntology] = {}
_hashes: dict[int, tuple[Any, str]] = {}


def load_run_ontology(spec: str | None) -> RunOntology:
    """The run ontology for ``spec`` (``default``/``None`` or a path, already allowed by the edge).
    A user ontology file is loaded once per process (reloaded when the file changes); a missing or
    malformed file raises :class:`core.errors.OntologyError` naming it."""
    if spec in (None, "", DEFAULT_ONTOLOGY):
        return RunOntology(spec=DEFAULT_ONTOLOGY)
    from neurolabel.core.errors import OntologyError

    path = os.path.realpath(os.path.expanduser(str(spec)))
    try:
        st = os.stat(path)
    except OSError:
        raise OntologyError(f"{spec}: ontology file not found") from None
    key = (path, st.st_mtime_ns, st.st_size)
    with _lock:
        if key not in _loaded:
            from neurolabel.ontology.annotate import Annotator
            from neurolabel.ontology.load import load_ontology

            _loaded[key] = RunOntology(spec=path, annotator=Annotator(load_ontology(path)))
        return _loaded[key]


def content_hash(ontology: Any) -> str:
    """SHA-256 (hex) of an :class:`ontology.model.Ontology`'s content: class IRIs, labels and
    superclass edges (so the same classes read from RDF/XML or Turtle hash alike). Cached per
    ontology object."""
    with _lock:
        got = _hashes.get(id(ontology))
        if got is not None and got[0] is ontology:
            return got[1]
    h = hashlib.sha256()
    for i, iri in enumerate(ontology.iris):
        h.update(iri.encode("utf-8"))
        h.update(b"\x1f")
        h.update("\x1e".join(ontology.labels[i]).encode("utf-8"))
        h.update(b"\x1f")
        h.update(ontology.parent_idx[ontology.parent_ptr[i]:ontology.parent_ptr[i + 1]].astype("<i8").tobytes())
        h.update(b"\n")
    digest = h.hexdigest()
    with _lock:
        _hashes[id(ontology)] = (ontology, digest)
    return digest


def identity(ontology: Any) -> tuple[str, str]:
    """``(name, content hash)`` of an :class:`ontology.model.Ontology`."""
    return str(ontology.name), content_hash(ontology)


__all__ = ["RunOntology", "content_hash", "identity", "load_run_ontology"]
