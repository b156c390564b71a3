"""Shared types, plugin protocols, registry, settings and errors of neurolabel."""

from neurolabel.core.errors import (
    ConfigError,
    CorpusError,
    ExplanationError,
    LMError,
    ModelError,
    NeurolabelError,
    OntologyError,
    ScoringError,
    StorageError,
)
from neurolabel.core.types import (
    ActivationRecord,
    Explanation,
    NeuronId,
    NeuronRecord,
    NeuronStats,
    ScoreResult,
    SequenceSimulation,
    Split,
    WindowKind,
    split_of_window,
)

__all__ = [
    "ActivationRecord",
    "ConfigError",
    "CorpusError",
    "Explanation",
    "ExplanationError",
    "LMError",
    "ModelError",
    "NeurolabelError",
    "NeuronId",
    "NeuronRecord",
    "NeuronStats",
    "OntologyError",
    "ScoreResult",
    "ScoringError",
    "SequenceSimulation",
    "Split",
    "StorageError",
    "WindowKind",
    "split_of_window",
]
