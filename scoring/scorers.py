"""Scorers: turn simulations and true activations into a :class:`core.ScoreResult`."""

from __future__ import annotations

import threading
from collections import OrderedDict
from itertools import chain
from typing import Any, NamedTuple, Sequence

import numpy as np

from neurolabel.core.errors import ScoringError
from neurolabel.core.registry import SCORERS
from neurolabel.core.types import ActivationRecord, ScoreResult, SequenceSimulation
from neurolabel.scoring import metrics


class FlatSimulations(Sequence[SequenceSimulation]):
    """Simulations of consecutive windows held as one array of every prediction, window after
    window, as a batched simulator computes them
    (:meth:`scoring.symbolic_simulator.SymbolicSimulator.simulate_many`): a sequence of
    :class:`core.SequenceSimulation`, one per window, made only when one is read — a scorer reads
    ``values``, ``lengths`` and ``method`` instead (a neuron's ~16 simulations of ~40 windows each
    made ~650 objects and tuples of ~2,500 floats)."""

    def __init__(self, token_lists: Sequence[Sequence[str]], values: np.ndarray, method: str) -> None:
        values = np.asarray(values, dtype=np.float64)
        values.flags.writeable = False
        self.values = values
        """Every window's predictions, concatenated (float64, read-only)."""
        self.lengths = tuple(len(t) for t in token_lists)
        """Tokens of each window."""
        if sum(self.lengths) != len(values):
            raise ValueError(f"{len(values)} predictions for {sum(self.lengths)} tokens")
        self.method = method
        """Every simulation's ``method``."""
        self._token_lists = token_lists
        self._items: list[SequenceSimulation] | None = None

    def _simulations(self) -> list[SequenceSimulation]:
        if self._items is None:
            flat, out, start = self.values.tolist(), [], 0
            for toks in self._token_lists:
                stop = start + len(toks)
                out.append(SequenceSimulation(tokens=tuple(toks), expected_activations=tuple(flat[start:stop]),
                                              method=self.method))
                start = stop
            self._items = out
        return self._items

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i):  # type: ignore[override]
        return self._simulations()[i]

    def __iter__(self):
        return iter(self._simulations())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (FlatSimulations, list, tuple)):
            return self._simulations() == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"FlatSimulations({self._simulations()!r})"


def _predictions(simulations: Sequence[SequenceSimulation], n: int) -> np.ndarray:
    """Every prediction of ``simulations`` (``n`` in all), window after window, as float64."""
    if isinstance(simulations, FlatSimulations):
        return simulations.values
    return np.fromiter(chain.from_iterable(s.expected_activations for s in simulations), dtype=np.float64, count=n)


def _balanced(simulations: Sequence[SequenceSimulation], records: Sequence[ActivationRecord]
              ) -> tuple[list[float], list[float]]:
    """Tokens of as many top as random windows (``n = min`` of the two counts: the first ``n``
    of each, top windows highest first), as OpenAI's scoring uses equal numbers of each."""
    top = [(s, r) for s, r in zip(simulations, records) if r.kind == "top"]
    rnd = [(s, r) for s, r in zip(simulations, records) if r.kind == "random"]
    top.sort(key=lambda sr: -sr[1].max_activation)
    n = min(len(top), len(rnd))
    pairs = top[:n] + rnd[:n]
    return _flatten([s for s, _ in pairs], [r for _, r in pairs])


def _flatten(simulations: Sequence[SequenceSimulation], records: Sequence[ActivationRecord],
             kinds: tuple[str, ...] | None = None) -> tuple[list[float], list[float]]:
    pred: list[float] = []
    true: list[float] = []
    for sim, rec in zip(simulations, records):
        if kinds is None or rec.kind in kinds:
            pred.extend(sim.expected_activations)
            true.extend(rec.activations)
    return pred, true


class _Truth(NamedTuple):
    """What a scorer needs of the true side of one window list, kept for the next simulations
    scored on the same windows (a neuron's every candidate label is scored on its held-out
    windows, by two simulators)."""

    records: tuple[ActivationRecord, ...]
    """The windows (held, so that their ids stay theirs while cached)."""
    lengths: tuple[int, ...]
    true: np.ndarray
    """Every true activation, window after window (float64)."""
    random: np.ndarray
    """Positions in ``true`` of the random windows' tokens, in order."""
    top: np.ndarray
    """… of the top windows' tokens."""
    balanced: np.ndarray
    """… of :func:`_balanced`'s tokens, in its order."""
    actual: np.ndarray
    """:func:`metrics.true_active` of ``true``."""
    centred: dict[str, tuple[np.ndarray, float]]
    """:func:`metrics.centred` of ``true`` (``"all"``) and of its ``random``, ``top`` and
    ``balanced`` tokens."""
    window_sums: metrics.WindowSums | None
    """:func:`metrics.window_sums` of ``true`` over the windows (the standard error's true side)."""


_TRUTHS = 8
"""Window lists whose :class:`_Truth` is kept (most recently used)."""
_truths: "OrderedDict[tuple[int, ...], _Truth]" = OrderedDict()
_truths_lock = threading.Lock()


def _truth(records: Sequence[ActivationRecord], active_fraction: float) -> _Truth:
    key = (active_fraction, *map(id, records))
    with _truths_lock:
        got = _truths.get(key)
        if got is not None and all(a is b for a, b in zip(got.records, records)):
            _truths.move_to_end(key)
            return got
    lengths = tuple(len(r.activations) for r in records)
    starts = np.cumsum((0,) + lengths)
    true = np.asarray([a for r in records for a in r.activations], dtype=np.float64)

    def positions(windows: Sequence[int]) -> np.ndarray:
        if not windows:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(starts[i], starts[i + 1]) for i in windows])

    top = [i for i, r in enumerate(records) if r.kind == "top"]
    rnd = [i for i, r in enumerate(records) if r.kind == "random"]
    top_sorted = sorted(top, key=lambda i: -records[i].max_activation)  # as _balanced orders them
    n = min(len(top_sorted), len(rnd))
    subsets = {"random": positions(rnd), "top": positions(top), "balanced": positions(top_sorted[:n] + rnd[:n])}
    centred = {"all": metrics.centred(true), **{k: metrics.centred(true[v]) for k, v in subsets.items()}}
    got = _Truth(tuple(records), lengths, true, subsets["random"], subsets["top"], subsets["balanced"],
                 metrics.true_active(true, fraction=active_fraction), centred, metrics.window_sums(true, lengths))
    with _truths_lock:
        _truths[key] = got
        while len(_truths) > _TRUTHS:
            _truths.popitem(last=False)
    return got


@SCORERS.register("correlation")
class CorrelationScorer:
    """OpenAI's neuron-explainer score: Pearson correlation over all tokens of all scored
    windows concatenated (top and random windows together, raw true activations).

    Parts: ``top_and_random`` (= the score), ``random_only``, ``top_only``,
    ``openai_comparable`` (the same correlation over as many top as random windows, as OpenAI's
    scoring uses equal numbers of each; ``None`` without random windows),
    ``predicted_active_share`` (share of scored tokens predicted active: 0 means the
    explanation is empty on the held-out windows), and the
    detection-style ``balanced_accuracy``, ``auprc`` and ``f1`` of predicted vs true
    active tokens (true active: >= ``active_fraction`` of the largest scored activation;
    predicted active: above the midpoint of the prediction range; AUPRC ranks tokens by
    the raw predictions), and ``se``, the score's jackknife standard error over the scored
    windows (:func:`metrics.correlation_se`; the label choice reads it)."""

    kind = "correlation"

    def __init__(self, active_fraction: float = metrics.DEFAULT_ACTIVE_FRACTION) -> None:
        self.active_fraction = active_fraction

    @classmethod
    def from_defaults(cls, **kwargs: Any) -> "CorrelationScorer":
        """The scorer with its default settings."""
        return cls(**kwargs)

    def score(self, simulations: Sequence[SequenceSimulation], records: Sequence[ActivationRecord],
              *, simulator: str) -> ScoreResult:
        """Score ``simulations`` against ``records`` (same order, same token counts)."""
        if len(simulations) != len(records):
            raise ScoringError(f"{len(simulations)} simulations for {len(records)} windows")
        truth = _truth(records, self.active_fraction)
        flat = isinstance(simulations, FlatSimulations)  # lengths and method read without the windows' objects
        lengths = simulations.lengths if flat else [len(sim.expected_activations) for sim in simulations]
        for i, (got, rec) in enumerate(zip(lengths, records)):
            if got != truth.lengths[i]:
                raise ScoringError(f"window {rec.window_id} (#{i}): {got} predictions for {len(rec.activations)} tokens")
        # the windows' true side (flattened, split by kind, balanced, active tokens) is made once per
        # window list; the predictions are read straight into an array (the same values as the lists)
        true = truth.true
        if not len(true):
            raise ScoringError("no tokens to score")
        pred = _predictions(simulations, len(true))
        centred = truth.centred  # the true side of each correlation, made once per window list
        main = metrics.correlation_centred(pred, centred["all"])
        actual = truth.actual
        guessed = metrics.predicted_active(pred)
        parts: dict[str, float | None] = {
            "top_and_random": main,
            "random_only": metrics.correlation_centred(pred[truth.random], centred["random"]),
            "top_only": metrics.correlation_centred(pred[truth.top], centred["top"]),
            "openai_comparable": metrics.correlation_centred(pred[truth.balanced], centred["balanced"]),
            "predicted_active_share": float(guessed.mean()) if len(guessed) else 0.0,
            "balanced_accuracy": metrics.balanced_accuracy(guessed, actual),
            "auprc": metrics.auprc(pred, actual) if main is not None else None,
            "f1": metrics.f1(guessed, actual),
            "se": metrics.correlation_se_windows(pred, truth.window_sums) if main is not None else None,
        }
        methods = ([simulations.method] if simulations.method else []) if flat else sorted(
            {s.method for s in simulations if s.method})
        return ScoreResult(
            score=main,
            scorer=self.kind,
            simulator=simulator,
            parts=parts,
            n_tokens=len(pred),
            split="score",
            method="+".join(methods),
        )
