"""Planted-concept activation records: real sentences, synthetic units with a known concept.

``planted_records(["animal.n.01", ...])`` returns one :class:`core.NeuronRecord` per class. The
windows are real English text (WordNet 3.0's ~48k example sentences, shuffled and packed into
windows of up to ``window_tokens`` SmolLM2 tokens); unit *i* fires (activation uniform in
[5, 10]) exactly on the tokens of words that fall under class *i* — a word is under the class when
its most frequent noun sense (as :class:`ontology.annotate.Annotator` reads it: subwords joined,
lemmatised) is the class or a subclass of it — and is 0 elsewhere. With ``noise > 0`` every other
token also fires with that probability (the activation of a random firing is uniform in [5, 10]
too), so noise both adds false positives and dilutes the concept.

Each record keeps ``n_top`` top windows and ``n_random`` random windows per split (splits by
:func:`core.split_of_window`), like ``activations.record.record_neurons`` does for real units.

Run ``.venv/bin/python bench/planted.py`` to print the default classes and their coverage.
"""

from __future__ import annotations

import logging
import random
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neurolabel.core.errors import OntologyError  # noqa: E402
from neurolabel.core.types import ActivationRecord, NeuronId, NeuronRecord, NeuronStats, split_of_window  # noqa: E402

log = logging.getLogger(__name__)

DEFAULT_CLASSES: tuple[str, ...] = (
    "animal.n.01",
    "person.n.01",
    "body_part.n.01",
    "food.n.02",
    "vehicle.n.01",
    "building.n.01",
    "city.n.01",
    "time_period.n.01",
    "plant.n.02",
    "garment.n.01",
)
"""Ten WordNet classes with enough mentions in the example sentences to plant."""

PLANTED_MODEL = "planted"
"""Model name the planted records carry."""


@dataclass(frozen=True)
class _Pool:
    tokens: tuple[tuple[str, ...], ...]
    """Token strings of each window."""
    closures: tuple[tuple[frozenset[int], ...], ...]
    """Classes (with ancestors) of each token of each window."""


def wordnet_sentences() -> list[str]:
    """WordNet 3.0's example sentences (all parts of speech), in file order, deduplicated."""
    from neurolabel.core.assets import wordnet_dir

    seen: set[str] = set()
    out: list[str] = []
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (wordnet_dir() / f"data.{pos}").read_text(encoding="utf-8").splitlines():
            if line.startswith(" ") or "|" not in line:
                continue
            gloss = line.split("|", 1)[1]
            for ex in re.findall(r'"([^"]{12,})"', gloss):
                ex = ex.strip()
                if ex not in seen:
                    seen.add(ex)
                    out.append(ex[0].upper() + ex[1:] if ex[0].islower() else ex)
    return out


def _default_tokenizer():
    """SmolLM2's fast tokenizer through ``tokenizers`` (importing transformers takes far longer)."""
    from tokenizers import Tokenizer

    from neurolabel.core.assets import smollm2_dir

    return Tokenizer.from_file(str(smollm2_dir() / "tokenizer.json"))


@lru_cache(maxsize=4)
def _pool(n_windows: int, window_tokens: int, seed: int) -> _Pool:
    from neurolabel.ontology.annotate import Annotator
    from neurolabel.ontology.build import default_ontology

    sentences = wordnet_sentences()
    random.Random(seed).shuffle(sentences)
    # words read as nouns, as the module docstring says
    return make_pool(sentences, Annotator(default_ontology(), parts_of_speech="n"), n_windows=n_windows,
                     window_tokens=window_tokens)


def make_pool(sentences: Sequence[str], annotator, *, n_windows: int, window_tokens: int) -> _Pool:
    """Windows of up to ``window_tokens`` SmolLM2 tokens packed from ``sentences`` (in order), with
    each token's classes (and their ancestors) as ``annotator`` reads them."""
    tok = _default_tokenizer()
    enc = tok.encode_batch([" " + s.rstrip(".") + "." for s in sentences[: n_windows * 6]],
                           add_special_tokens=False)
    windows: list[tuple[str, ...]] = []
    cur: list[int] = []
    for ids in (e.ids for e in enc):
        if cur and len(cur) + len(ids) > window_tokens:
            windows.append(tuple(tok.decode([i]) for i in cur))
            cur = []
            if len(windows) >= n_windows:
                break
        cur.extend(ids[:window_tokens])
    if cur and len(windows) < n_windows:
        windows.append(tuple(tok.decode([i]) for i in cur))
    closures = tuple(tuple(annotator.annotate(w)) for w in windows)
    return _Pool(tokens=tuple(windows), closures=closures)


def planted_records(
    class_names: Sequence[str | Sequence[str]] = DEFAULT_CLASSES,
    *,
    noise: float = 0.0,
    seed: int = 0,
    n_top: int = 20,
    n_random: int = 20,
    n_windows: int = 2000,
    window_tokens: int = 64,
    model: str = PLANTED_MODEL,
    layer: int = 0,
) -> list[NeuronRecord]:
    """One record per class name (a WordNet synset name like ``"animal.n.01"``, an IRI, or a
    label of the default ontology), or a tuple of them for a unit that fires on words under any
    of them (a polysemantic unit); neuron ``(layer, i)`` is planted with ``class_names[i]``.

    ``n_top``/``n_random`` windows are kept per split; the pool holds ``n_windows`` windows of
    real sentences (shared by all classes and cached per process). Raises
    :class:`core.errors.OntologyError` for an unknown class and ``ValueError`` for a class no
    pool word falls under."""
    from neurolabel.ontology.build import default_ontology

    return plant(_pool(n_windows, window_tokens, 0), default_ontology(), class_names, noise=noise, seed=seed,
                 n_top=n_top, n_random=n_random, model=model, layer=layer)


def plant(pool: _Pool, onto, class_names: Sequence[str | Sequence[str]], *, noise: float = 0.0, seed: int = 0,
          n_top: int = 20, n_random: int = 20, model: str = PLANTED_MODEL, layer: int = 0) -> list[NeuronRecord]:
    """:func:`planted_records` over a given pool of windows and the ontology its classes are in."""
    records = []
    for i, name in enumerate(class_names):
        names = (name,) if isinstance(name, str) else tuple(name)  # several names: fires on any of them
        classes = [onto.find(n) for n in names]
        for n, cls in zip(names, classes):
            if not any(cls in c for clos in pool.closures for c in clos):
                raise ValueError(f"no word of the planted corpus falls under {n!r}")
        rng = np.random.default_rng([seed, i])
        acts = []
        for toks, clos in zip(pool.tokens, pool.closures):
            fire = np.fromiter((any(cls in c for cls in classes) for c in clos), dtype=bool, count=len(toks))
            if noise > 0:
                fire |= rng.random(len(toks)) < noise
            a = np.where(fire, rng.uniform(5.0, 10.0, len(toks)), 0.0)
            acts.append(a)
        records.append(_record(pool, acts, cls_name="|".join(names), index=i, layer=layer, model=model,
                               n_top=n_top, n_random=n_random, rng=rng))
    return records


def _record(pool: _Pool, acts: list[np.ndarray], *, cls_name: str, index: int, layer: int,
            model: str, n_top: int, n_random: int, rng: np.random.Generator) -> NeuronRecord:
    def make(w: int, kind: str) -> ActivationRecord:
        return ActivationRecord(
            tokens=pool.tokens[w],
            activations=tuple(float(x) for x in acts[w]),
            window_id=w,
            split=split_of_window(w),
            kind=kind,  # type: ignore[arg-type]
        )

    maxes = np.array([a.max() if len(a) else 0.0 for a in acts])
    order = np.argsort(-maxes, kind="stable")
    top: list[ActivationRecord] = []
    random_w: list[ActivationRecord] = []
    for split in ("explain", "score"):
        ids = [int(w) for w in order if split_of_window(int(w)) == split and maxes[w] > 0][:n_top]
        top.extend(make(w, "top") for w in ids)
        cand = [w for w in range(len(acts)) if split_of_window(w) == split]
        pick = rng.choice(len(cand), size=min(n_random, len(cand)), replace=False)
        random_w.extend(make(cand[int(j)], "random") for j in sorted(pick))
    top.sort(key=lambda r: -r.max_activation)
    allv = np.concatenate(acts) if acts else np.zeros(0)
    stats = NeuronStats(
        count=int(allv.size),
        mean=float(allv.mean()),
        std=float(allv.std()),
        max=float(allv.max()),
        min=float(allv.min()),
        frac_active=float((allv > 0).mean()),
    )
    log.debug("planted %s as neuron %d:%d", cls_name, layer, index)
    return NeuronRecord(model=model, neuron=NeuronId(layer, index), top=tuple(top),
                        random=tuple(random_w), stats=stats)


def planted_class(record: NeuronRecord, class_names: Sequence[str] = DEFAULT_CLASSES) -> str:
    """The class name planted in ``record`` (by its neuron index)."""
    try:
        return class_names[record.neuron.index]
    except IndexError:
        raise OntologyError(f"neuron {record.neuron} has no planted class") from None


def main() -> None:  # pragma: no cover - manual inspection
    import time

    from neurolabel.ontology.build import default_ontology

    t0 = time.perf_counter()
    recs = planted_records()
    onto = default_ontology()
    print(f"built {len(recs)} planted records in {time.perf_counter() - t0:.1f} s")
    for name, r in zip(DEFAULT_CLASSES, recs):
        words = sorted({t.strip() for w in r.windows("top", "explain") for t, a in zip(w.tokens, w.activations) if a > 0})
        print(f"{name:20s} {onto.label(onto.find(name)):15s} frac_active={r.stats.frac_active:.4f} "
              f"top={len(r.top)} e.g. {', '.join(words[:12])}")


if __name__ == "__main__":  # pragma: no cover
    main()
