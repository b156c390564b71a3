"""The frozen results of studies that are runs of their own: contrasts between two sets of
texts (which neurons separate them) and interventions on one neuron (what it causes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from neurolabel.core.types import NeuronId

ExampleScore = Literal["max", "mean"]
"""How one example's activations become one number per neuron: the max or the mean over its tokens."""

ContrastTest = Literal["mannwhitney", "permutation"]
"""The test behind a contrast's p-values."""

InterventionMode = Literal["ablate", "clamp", "scale"]
"""What an intervention does to a unit: set it to 0, set it to a value, multiply it by a factor."""


@dataclass(frozen=True)
class SetFingerprint:
    """Which set of examples one side of a contrast was."""

    name: str
    """Where it came from (file or folder name, or ``body`` for texts sent to the API)."""
    sha256: str
    """SHA-256 of the examples, each followed by a newline, in order."""
    n_examples: int
    """Examples streamed."""
    n_tokens: int
    """Tokens streamed (after truncation, prefix tokens not counted)."""


@dataclass(frozen=True)
class NeuronContrast:
    """How one neuron separates set A from set B."""

    neuron: NeuronId
    """Which unit."""
    rank: int
    """Position in the study's ranking (0 = separates best)."""
    auroc: float
    """P(score on an A example > score on a B example), ties one half: 1 = fires on A only,
    0 = fires on B only, 0.5 = no separation."""
    p_value: float
    """Two-sided p-value of the study's test (Mann–Whitney U or permutation)."""
    q_value: float
    """Benjamini–Hochberg adjusted p-value over every neuron tested."""
    smd: float | None
    """Standardised mean difference (Cohen's d) of the per-example score (the study's ``score``)."""
    smd_other: float | None
    """The same for the other per-example score (``mean`` when the study ranks by ``max``)."""
    mean_a: float
    """Mean per-example score over all A examples."""
    mean_b: float
    """Mean per-example score over all B examples."""
    std_a: float
    """Standard deviation of the per-example score over A."""
    std_b: float
    """Standard deviation over B."""
    sample_a: tuple[float, ...] = ()
    """Per-example scores of the A examples the rank statistics were computed on (all of them,
    or a uniform sample when A held more than the study's reservoir)."""
    sample_b: tuple[float, ...] = ()
    """The same for B."""


@dataclass(frozen=True)
class ContrastStudy:
    """The result of a contrast: the neurons that separate A from B, best first."""

    name: str
    """The study's name (``--name``)."""
    model: str
    """Target model name."""
    set_a: SetFingerprint
    """Side A."""
    set_b: SetFingerprint
    """Side B."""
    layers: tuple[int, ...]
    """Layers tested."""
    n_tested: int
    """Neurons tested (the number the p-values were corrected for)."""
    score: ExampleScore
    """Per-example score ranked on."""
    test: ContrastTest
    """Test behind the p-values."""
    neurons: tuple[NeuronContrast, ...] = ()
    """The neurons that passed the thresholds, best first."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """Settings of the run (reservoir, thresholds, truncation, seed…)."""
