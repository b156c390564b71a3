"""The ontology of a run: the default WordNet one or a user ontology file, shared by the run's
explainers and symbolic simulators, and identified by name and content hash so that a stored
label is never scored or rendered against another ontology than the one it was written in."""

from __future__ import annotations

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


__all__ = ["RunOntology", "load_run_ontology"]
