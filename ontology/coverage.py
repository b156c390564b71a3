"""How much of a set of neurons' text the ontology describes: the share of tokens, and of
strongly active tokens, that carry at least one class.

    from neurolabel.ontology.coverage import coverage
    cov = coverage(records)            # default annotator; or coverage(records, annotator)
    cov.tokens, cov.strong_tokens      # e.g. 0.99, 0.99

Tokens are those of every kept window of each record (top, random and quantile; both splits;
a window kept twice for a neuron counts once). A token is *strongly active* when its activation
is at least ``strong`` (default 0.5) × the neuron's largest kept activation. Besides "any class",
the share with a class beyond the orthographic kinds (a WordNet synset, a function-word class
or a token form) is reported, since every non-blank token has an orthographic kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from neurolabel.core.types import NeuronRecord
from neurolabel.ontology.annotate import Annotator


@dataclass(frozen=True)
class Coverage:
    """Shares of tokens with at least one class."""

    tokens: float
    """Share of all tokens with at least one class."""
    strong_tokens: float
    """Share of strongly active tokens with at least one class."""
    tokens_beyond_orthography: float
    """Share of all tokens with a class that is not an orthographic kind (equals ``tokens`` for
    ontologies without a lexical layer)."""
    strong_beyond_orthography: float
    """The same among strongly active tokens."""
    n_tokens: int
    """Number of tokens counted."""
    n_strong: int
    """Number of strongly active tokens counted."""


def coverage(records: Iterable[NeuronRecord], annotator: Annotator | None = None, *,
             strong: float = 0.5, within: Iterable[int] | None = None) -> Coverage:
    """The :class:`Coverage` of ``records`` under ``annotator`` (default: the default ontology's);
    with ``within``, only those class ids count (e.g. the noun synsets, for the share a noun-only
    ontology would cover)."""
    ann = annotator if annotator is not None else Annotator.from_defaults()
    ortho = _orthographic_classes(ann)
    only = frozenset(int(c) for c in within) if within is not None else None
    n = n_cov = n_deep = s = s_cov = s_deep = 0
    for rec in records:
        peak = rec.max_activation
        seen: set[object] = set()
        for kind in ("top", "random", "quantile"):
            for w in rec.windows(kind):  # type: ignore[arg-type]
                key = w.window_id if w.window_id >= 0 else (w.tokens, w.activations)
                if key in seen:
                    continue
                seen.add(key)
                for classes, a in zip(ann.direct_classes(w.tokens), w.activations):
                    if only is not None:
                        classes = [c for c in classes if c in only]
                    has = bool(classes)
                    deep = has and any(c not in ortho for c in classes)
                    n += 1
                    n_cov += has
                    n_deep += deep
                    if peak > 0 and a >= strong * peak:
                        s += 1
                        s_cov += has
                        s_deep += deep
    return Coverage(
        tokens=n_cov / n if n else 0.0,
        strong_tokens=s_cov / s if s else 0.0,
        tokens_beyond_orthography=n_deep / n if n else 0.0,
        strong_beyond_orthography=s_deep / s if s else 0.0,
        n_tokens=n,
        n_strong=s,
    )


def _orthographic_classes(ann: Annotator) -> frozenset[int]:
    layer = ann.ontology.lexical
    if layer is None:
        return frozenset()
    root = layer.kinds["Orthography"]
    return frozenset(ann.ontology.descendants(root, include_self=True).tolist())
