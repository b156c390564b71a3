"""Compatibility names for code written before :mod:`pipeline` existed (``bench/quality.py`` still
imports them). New code uses :mod:`pipeline.plugins` and :mod:`pipeline.simulators` directly;
the run itself is :func:`pipeline.run.run` of a :class:`pipeline.spec.RunSpec`."""

from __future__ import annotations

from typing import Any

from neurolabel.core.types import Explanation
from neurolabel.pipeline.plugins import build
from neurolabel.pipeline.simulators import (
    FALLBACK_CHAIN,
    FALLBACK_SIMULATOR,
    applies as simulator_applies,
    default_simulator,
    resolve_simulators,
)


def plugin(kind: str, tag: str) -> Any:
    """The process-wide instance of explainer/simulator/scorer ``tag`` over the default ontology."""
    return build(kind, tag)


def fallback_simulator(explanation: Explanation) -> tuple[str, Any]:
    """:func:`pipeline.simulators.fallback` over the default ontology."""
    from neurolabel.pipeline.simulators import fallback

    return fallback(explanation)


__all__ = ["FALLBACK_CHAIN", "FALLBACK_SIMULATOR", "default_simulator", "fallback_simulator", "plugin",
           "resolve_simulators", "simulator_applies"]
