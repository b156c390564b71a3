"""The plain, frozen data types that flow between the stages.

Stages never mutate what they receive: use ``dataclasses.replace`` to derive a new object.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

Split = Literal["explain", "score"]
"""Which half of a neuron's windows a record belongs to: explanations are written from
``explain`` windows and scored only on ``score`` windows."""

WindowKind = Literal["top", "random", "quantile"]
"""Why a window was kept for a neuron: among its top activations, a uniform random
sample, or a sample from an activation-quantile bin."""


def split_of_window(window_id: int, score_fraction: float = 0.5) -> Split:
    """Deterministic split of a corpus window, the same for every neuron and every run.

    A hash (not the position) decides, so corpus order cannot leak into the split.
    """
    h = zlib.crc32(int(window_id).to_bytes(8, "little", signed=False)) / 0xFFFFFFFF
    return "score" if h < score_fraction else "explain"


@dataclass(frozen=True, order=True)
class NeuronId:
    """One unit of a model: an MLP neuron at ``layer`` with position ``index``."""

    layer: int
    """Zero-based layer (transformer block) number."""
    index: int
    """Zero-based index of the neuron within the layer's MLP."""

    def __str__(self) -> str:
        return f"{self.layer}:{self.index}"


@dataclass(frozen=True)
class ActivationRecord:
    """One window of text with the neuron's activation at every token."""

    tokens: tuple[str, ...]
    """The window's tokens as strings (as the tokenizer decodes them, spaces kept)."""
    activations: tuple[float, ...]
    """The neuron's activation at each token; same length as ``tokens``."""
    window_id: int = -1
    """Index of the window in its corpus (-1 when unknown, e.g. imported records)."""
    split: Split = "explain"
    """Explain or score split (see :func:`split_of_window`)."""
    kind: WindowKind = "top"
    """Why this window was kept."""
    quantile: int | None = None
    """For ``kind == "quantile"``: the quantile bin (0 = lowest)."""

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.activations):
            raise ValueError(
                f"record has {len(self.tokens)} tokens but {len(self.activations)} activations"
            )
        # a finite sum means every activation is finite (NaN and ±inf carry into it): one C loop per
        # window instead of a Python step per token (a record's load checks ~90 windows); else the
        # token-by-token check finds the culprit (a sum that overflowed finds none, as before)
        if not math.isfinite(sum(self.activations)):
            for a in self.activations:
                if not math.isfinite(a):
                    raise ValueError(f"record has a non-finite activation ({a!r})")

    @property
    def max_activation(self) -> float:
        """Largest activation in the window."""
        return max(self.activations) if self.activations else 0.0


@dataclass(frozen=True)
class NeuronStats:
    """Running statistics of a neuron over every token of the recorded corpus."""

    count: int
    """Number of tokens seen."""
    mean: float
    """Mean activation."""
    std: float
    """Standard deviation of the activation."""
    max: float
    """Largest activation seen."""
    min: float
    """Smallest activation seen."""
    frac_active: float
    """Fraction of tokens with activation > 0."""


@dataclass(frozen=True)
class TokenStat:
    """One token type's activations over a neuron's explain-split windows."""

    token: str
    """The token as the tokenizer decodes it on its own (spaces kept), as in ``ActivationRecord.tokens``."""
    count: int
    """Occurrences in the explain split."""
    mean: float
    """Mean activation of the neuron at those occurrences."""


@dataclass(frozen=True)
class TokenStats:
    """Per-token-type statistics of one neuron over every explain-split token of the corpus
    (not only the kept windows), gathered during recording in bounded memory. Score-split
    tokens are never counted, so explainers may use them freely."""

    count: int
    """Explain-split tokens seen (all types)."""
    mean: float
    """Mean activation over all of them."""
    tokens: tuple[TokenStat, ...] = ()
    """The token types that matter most for this neuron (largest ``count × (mean − overall mean)²``,
    i.e. the share of the activation variance a per-token table explains), most important first."""
    tracked_types: int = 0
    """How many token types were tracked during recording (types outside them are not listed)."""


def token_stats_to_json(ts: TokenStats | None) -> dict[str, Any] | None:
    """JSON form of ``ts`` (``tokens`` as ``[token, count, mean]`` triples); ``None`` stays ``None``."""
    if ts is None:
        return None
    return {"count": ts.count, "mean": ts.mean, "tracked_types": ts.tracked_types,
            "tokens": [[t.token, t.count, t.mean] for t in ts.tokens]}


def token_stats_from_json(d: Mapping[str, Any] | None) -> TokenStats | None:
    """:class:`TokenStats` from :func:`token_stats_to_json`'s form. Raises ValueError when malformed."""
    if not d:
        return None
    try:
        return TokenStats(count=int(d["count"]), mean=float(d["mean"]), tracked_types=int(d.get("tracked_types", 0)),
                          tokens=tuple(TokenStat(str(t), int(c), float(m)) for t, c, m in d.get("tokens", ())))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed token statistics: {exc!r}") from None


@dataclass(frozen=True)
class NeuronRecord:
    """Everything recorded about one neuron: kept windows and statistics."""

    model: str
    """Name of the target model (e.g. ``"smollm2-135m"``)."""
    neuron: NeuronId
    """Which unit."""
    top: tuple[ActivationRecord, ...] = ()
    """Top-activating windows of both splits, highest first."""
    random: tuple[ActivationRecord, ...] = ()
    """Uniform random sample of windows, both splits."""
    quantile: tuple[ActivationRecord, ...] = ()
    """Windows sampled per activation-quantile bin (``ActivationRecord.quantile``)."""
    stats: NeuronStats | None = None
    """Running statistics over the corpus, when recorded."""
    token_stats: TokenStats | None = None
    """Per-token-type statistics of the explain split, when recorded."""
    prefix: tuple[str, ...] = ()
    """Tokens fed before every window (e.g. ``("<|im_start|>",)``) whose positions are not
    recorded; the activations depend on them, so a recomputation must feed the same prefix."""

    def windows(self, kind: WindowKind, split: Split | None = None) -> tuple[ActivationRecord, ...]:
        """The kept windows of one kind, optionally only one split."""
        recs = {"top": self.top, "random": self.random, "quantile": self.quantile}[kind]
        if split is None:
            return recs
        return tuple(r for r in recs if r.split == split)

    @property
    def max_activation(self) -> float:
        """Largest activation among the kept top windows (falls back to stats)."""
        if self.top:
            return max(r.max_activation for r in self.top)
        return self.stats.max if self.stats else 0.0


@dataclass(frozen=True)
class SequenceSimulation:
    """A simulator's predicted activation for every token of one window."""

    tokens: tuple[str, ...]
    """The window's tokens."""
    expected_activations: tuple[float, ...]
    """Predicted activation per token (same scale as the simulator's outputs, e.g. 0–10)."""
    method: str = ""
    """How the predictions were obtained (e.g. ``"logits"``, ``"prompt-logprobs"``, ``"logprobs"``, ``"json"``)."""
    distribution_values: tuple[float, ...] = ()
    """The discrete values the distributions range over (e.g. 0..10), if any."""
    distribution_probabilities: tuple[tuple[float, ...], ...] = ()
    """Per token, the probability of each value in ``distribution_values``, if any."""


@dataclass(frozen=True)
class ScoreResult:
    """How well an explanation predicts a neuron on held-out windows."""

    score: float | None
    """Main score: Pearson correlation over all scored tokens (top and random windows
    concatenated). ``None`` when undefined (e.g. constant predictions)."""
    scorer: str
    """Tag of the scorer that produced it."""
    simulator: str
    """Tag of the simulator used."""
    parts: Mapping[str, float | None] = field(default_factory=dict)
    """Components: ``random_only``, ``top_only``, ``balanced_accuracy``, ``auprc``, ``f1``…"""
    n_tokens: int = 0
    """Number of tokens scored."""
    split: Split = "score"
    """Which split was scored (always ``score`` for real validation)."""
    method: str = ""
    """How the simulator obtained its predictions."""


@dataclass(frozen=True)
class Explanation:
    """One explanation of one neuron by one explainer, optionally scored."""

    model: str
    """Target model name."""
    neuron: NeuronId
    """Which unit it explains."""
    explainer: str
    """Registry tag of the explainer (``concept_induction``, ``pmi``, ``llm_summary``)."""
    explainer_version: str
    """Version of the explainer; a new version adds explanations, keeps old ones."""
    text: str
    """The label in English."""
    structured: Mapping[str, Any] = field(default_factory=dict)
    """Structured form, e.g. ``{"manchester": ..., "iris": [...], "precision": ...}``."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """Parameters the explainer ran with (stored for reproducibility)."""
    rank: int = 0
    """Rank among the candidates the explainer returned in one call (0 = its best)."""
    score: ScoreResult | None = None
    """Validation result, once scored."""
    ontology: str | None = None
    """Name of the ontology its class expressions refer to (``None``: it names no ontology classes)."""
    ontology_hash: str | None = None
    """SHA-256 of that ontology's content (:func:`ontology.identity.content_hash`): a label is only
    scored or rendered against the ontology with this hash."""
