"""The causal score of a label: does pushing the neuron make the model say what the label names?

For a stored explanation of a neuron, the words the label names are collected — for a class
expression the lexicalisations of its classes (their labels; with an ontology at hand also the
labels of their subclasses), for a token list those tokens (the tokens explainer's tokens whose
weight is above its baseline), for free text its content words —
and turned into the first token of each word (with its leading space, as it appears inside a
sentence). The neuron is then clamped high (or ablated) on every position of a set of neutral
prompts, and the mean shift of those tokens' next-token log-probabilities (over every position
of every prompt) is compared with the mean shift of random tokens of similar frequency (the
model's own mean log-probability over the same positions, before the intervention):

    score = shift(label tokens) - shift(matched random tokens)          (nats)

``parts`` also give both shifts and ``z``, the score in standard deviations of the random
tokens' shifts. The unintervened pass over the prompts is computed once and reused for every
explanation (:class:`BaseRun`), so one explanation costs one forward pass over the prompts.
The scorer is registered as ``intervention`` and stored beside the correlation score.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Mapping, Sequence

import numpy as np

from neurolabel.core.errors import ScoringError
from neurolabel.core.registry import SCORERS
from neurolabel.core.studies import InterventionMode
from neurolabel.core.types import Explanation, NeuronId, ScoreResult
from neurolabel.pipeline.intervene import (
    Intervention,
    LanguageModel,
    intervening,
    log_probs,
    prompt_ids,
    watching,
)

log = logging.getLogger(__name__)

_STOP = frozenset("""a an the of to in on at by for with from and or but not no is are was were be been being it its
this that these those as than then there their they them he she his her we our you your i me my so such
into onto over under about after before between through during any all some more most other which who whom
whose what when where why how can could would should will may might must do does did done has have had
having also only very just word words token tokens text mentions mention related relating concept concepts
things thing something""".split())


def default_prompts() -> list[str]:
    """The neutral prompts shipped with neurolabel (``pipeline/examples/prompts.txt``)."""
    text = resources.files("neurolabel.pipeline").joinpath("examples/prompts.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def label_words(explanation: Explanation, ontology: Any | None = None, *, max_words: int = 40) -> list[str]:
    """The words a label names (see the module docstring), most specific first, at most ``max_words``.
    ``ontology`` adds the descendants of the label's classes only when the label was induced over
    it (the explanation's ``ontology_hash`` is its content hash, or the label carries none)."""
    st = explanation.structured or {}
    words: list[str] = []
    labels = st.get("labels")
    if not labels and st.get("kind") == "class" and st.get("description"):
        labels = [st["description"]]
    if labels:
        words.extend(str(x) for x in labels)
        if ontology is not None and explanation.ontology_hash:
            from neurolabel.ontology.identity import content_hash

            if content_hash(ontology) != explanation.ontology_hash:  # the label refers to another ontology's
                # classes (another version of it): its descendants here may not be the ones it meant
                log.info("%s %s: ontology %s is not the one its label was induced over (%s): its stored class labels "
                         "only", explanation.neuron, explanation.explainer, content_hash(ontology)[:12],
                         explanation.ontology_hash[:12])
                ontology = None
        if ontology is not None:
            for iri in st.get("iris") or []:
                try:
                    c = ontology.find(iri)
                except Exception:  # noqa: BLE001 - an IRI of another ontology: keep the stored labels
                    continue
                for d in ontology.descendants(c, include_self=True)[:max_words].tolist():
                    words.extend(ontology.labels[d])
    elif st.get("kind") in ("token", "word") and st.get("description"):
        words.append(str(st["description"]))
    elif isinstance(st.get("tokens"), list):  # the tokens explainer: [[token, weight, count], …] above a baseline
        base = float(st.get("baseline") or 0.0)
        for t in st["tokens"]:
            if isinstance(t, (list, tuple)) and t:
                if len(t) < 2 or float(t[1]) > base:
                    words.append(str(t[0]))
            else:
                words.append(str(t))
    else:
        words.extend(w for w in re.findall(r"[A-Za-z][A-Za-z'-]+", explanation.text) if w.lower() not in _STOP)
    out = list(dict.fromkeys(w.strip().replace("_", " ") for w in words if w and w.strip()))
    return out[:max_words]


def word_tokens(tokenizer: Any, words: Sequence[str]) -> list[int]:
    """The first token of each word as it appears inside a sentence (leading space) and at the
    start of one, without duplicates."""
    out: list[int] = []
    for w in words:
        for form in (" " + w, w):
            ids = tokenizer(form, add_special_tokens=False)["input_ids"]
            if ids:
                out.append(int(ids[0]))
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class BaseRun:
    """The unintervened pass over the prompts, shared by every explanation scored on them."""

    ids: tuple[tuple[int, ...], ...]
    """Token ids fed per prompt."""
    log_probs: Any
    """``[positions, vocabulary]`` next-token log-probabilities of every prompt, stacked."""
    unit_max: Mapping[NeuronId, float]
    """Largest activation of each watched neuron over the prompts."""


def base_run(lm: LanguageModel, prompts: Sequence[str], neurons: Sequence[NeuronId] = ()) -> BaseRun:
    """Run the prompts once without intervention, watching ``neurons``."""
    import contextlib

    import torch

    if not prompts:
        raise ScoringError("no prompts to score interventions on")
    ids = [prompt_ids(lm, p) for p in prompts]
    with contextlib.ExitStack() as stack:
        seen = {n: stack.enter_context(watching(lm.target, n)) for n in neurons}
        lp = log_probs(lm, ids)
    prefix = len(lm.target.prefix_ids)
    unit_max = {}
    for n, s in seen.items():
        acts = s[0]
        unit_max[n] = float(max(acts[r, : len(x) - prefix].max() for r, x in enumerate(ids)))
    return BaseRun(ids=tuple(tuple(x) for x in ids), log_probs=torch.cat(lp), unit_max=unit_max)


def _special_ids(tokenizer: Any) -> set[int]:
    return {int(i) for i in getattr(tokenizer, "all_special_ids", [])}


def matched_random(freq: np.ndarray, targets: Sequence[int], *, n: int, exclude: set[int], seed: int) -> list[int]:
    """``n`` random tokens spread over the targets, each drawn among the 20 tokens whose
    frequency (``freq``: mean log-probability) is closest to its target's, never a target or
    an excluded token."""
    rng = np.random.default_rng(seed)
    banned = set(targets) | exclude
    order = np.argsort(freq)
    where = np.empty_like(order)
    where[order] = np.arange(order.size)
    out: list[int] = []
    per = max(1, n // max(1, len(targets)))
    for t in targets:
        lo, hi = max(0, where[t] - 40), min(order.size, where[t] + 41)
        pool = [int(v) for v in order[lo:hi] if int(v) not in banned]
        pool.sort(key=lambda v: abs(freq[v] - freq[t]))
        pool = pool[:20]
        if pool:
            out.extend(int(v) for v in rng.choice(pool, size=min(per, len(pool)), replace=False))
    return out


def causal_score(lm: LanguageModel, explanation: Explanation, *, base: BaseRun, mode: InterventionMode = "clamp",
                 value: float | None = None, n_random: int = 60, seed: int = 0,
                 ontology: Any | None = None) -> ScoreResult:
    """The causal score of ``explanation`` (see the module docstring). ``value`` is the clamp
    value (default: twice the neuron's largest activation on the prompts, at least 1) or the scale
    factor; ``mode="ablate"`` sets the neuron to 0 instead. Raises ScoringError when the label
    names no word the tokenizer can spell."""
    import torch

    neuron = explanation.neuron
    words = label_words(explanation, ontology)
    targets = word_tokens(lm.target.tokenizer, words)
    if not targets:
        raise ScoringError(f"explanation {explanation.text!r} of {neuron} names no word to look for")
    if mode == "clamp" and value is None:
        high = base.unit_max.get(neuron)
        if high is None:
            raise ScoringError(f"neuron {neuron} was not watched in the base run: pass it to base_run()")
        value = max(1.0, 2.0 * high)
    iv = Intervention(neuron=neuron, mode=mode, value=float(value if value is not None else 0.0))
    with intervening(lm.target, iv):
        after = torch.cat(log_probs(lm, [list(x) for x in base.ids]))
    delta = (after - base.log_probs).mean(dim=0).numpy().astype(np.float64)  # [V]
    freq = base.log_probs.mean(dim=0).numpy()
    rand = matched_random(freq, targets, n=n_random, exclude=_special_ids(lm.target.tokenizer), seed=seed)
    if not rand:
        raise ScoringError(f"no random tokens of similar frequency for {explanation.text!r}")
    t_shift, r_shift = float(delta[targets].mean()), float(delta[rand].mean())
    r_std = float(delta[rand].std())
    score = t_shift - r_shift
    parts = {"target_shift": t_shift, "random_shift": r_shift,
             "z": score / r_std if r_std > 1e-12 else None, "value": iv.value,
             "n_target_tokens": float(len(targets)), "n_random_tokens": float(len(rand))}
    return ScoreResult(score=score, scorer="intervention", simulator=mode, parts=parts,
                       n_tokens=int(base.log_probs.shape[0]), split="score", method=iv.describe())


@SCORERS.register("intervention")
class InterventionScorer:
    """Scores an explanation by intervening on its neuron (:func:`causal_score`), not by
    simulating activations: it needs the model, so it offers :meth:`score_explanations`;
    :meth:`score` (the simulate-and-correlate protocol) refuses with a message saying so."""

    kind = "intervention"

    def __init__(self, prompts: Sequence[str], *, mode: InterventionMode = "clamp", value: float | None = None,
                 n_random: int = 60, seed: int = 0) -> None:
        self.prompts = list(prompts)
        self.mode = mode
        self.value = value
        self.n_random = n_random
        self.seed = seed

    @classmethod
    def from_defaults(cls) -> "InterventionScorer":
        """Clamp high on the bundled neutral prompts."""
        return cls(default_prompts())

    def score(self, simulations: Sequence[Any], records: Sequence[Any], *, simulator: str) -> ScoreResult:
        """Not applicable: an intervention score needs the model (see :meth:`score_explanations`)."""
        raise ScoringError("the intervention scorer does not correlate simulations: it intervenes on the model; "
                           "use `neurolabel intervene --score-labels` or InterventionScorer.score_explanations")

    def score_explanations(self, lm: LanguageModel, explanations: Sequence[Explanation],
                           ontology: Any | None = None) -> list[ScoreResult]:
        """One causal score per explanation (one shared base pass over the prompts)."""
        base = base_run(lm, self.prompts, sorted({e.neuron for e in explanations}))
        return [causal_score(lm, e, base=base, mode=self.mode, value=self.value, n_random=self.n_random,
                             seed=self.seed, ontology=ontology) for e in explanations]
