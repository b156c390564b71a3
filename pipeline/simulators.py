"""Which simulator scores which explanation.

Each explainer declares its ``default_simulator`` (and optionally ``extra_simulators``, whose
scores are stored as extra score parts); each simulator may declare ``applies(explanation)``.
A run may name another simulator per explainer (``RunSpec.simulators``). When the chosen
simulator does not apply to an explanation (e.g. the symbolic simulator given a PMI word label
without a class), the first of :data:`FALLBACK_CHAIN` that applies scores it.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

from neurolabel.core.errors import ConfigError
from neurolabel.core.registry import EXPLAINERS, SIMULATORS
from neurolabel.core.types import Explanation
from neurolabel.pipeline.plugins import build, check
from neurolabel.pipeline.spec import PluginConfig, plugin_config

log = logging.getLogger(__name__)

FALLBACK_SIMULATOR = "embedding"
"""Simulator for explainers that declare no ``default_simulator`` (older third-party ones), and
the last resort for explanations the chosen simulator cannot simulate."""

FALLBACK_CHAIN: tuple[str, ...] = ("lexical", FALLBACK_SIMULATOR)
"""Tried in order when the chosen simulator does not apply to an explanation: the cheap lexical
simulator for short word labels, else the embedding simulator."""


def default_simulator(explainer: str) -> str:
    """The simulator tag explainer ``explainer`` declares (:class:`core.protocols.Explainer`)."""
    return str(getattr(EXPLAINERS[explainer], "default_simulator", "") or FALLBACK_SIMULATOR)


def resolve(explainers: Sequence[str | Mapping[str, Any] | PluginConfig],
            simulators: Mapping[str, Any] | str | PluginConfig | None = None) -> dict[str, PluginConfig]:
    """Simulator configuration per explainer tag: ``simulators`` may be one tag or configuration
    for all, a mapping (``"*"`` = all others), or ``None`` for each explainer's declared default.
    Unknown tags or parameters raise :class:`ConfigError`."""
    tags = [plugin_config(e).kind for e in explainers]
    if isinstance(simulators, (str, PluginConfig)) or (isinstance(simulators, Mapping) and "kind" in simulators):
        simulators = {"*": simulators}
    chosen = {k: plugin_config(v) for k, v in dict(simulators or {}).items()}
    unknown = set(chosen) - set(tags) - {"*"}
    if unknown:
        raise ConfigError(f"simulators given for explainers not chosen: {', '.join(sorted(unknown))}")
    out: dict[str, PluginConfig] = {}
    for e in tags:
        EXPLAINERS[e]  # raises ConfigError listing the known tags
        config = chosen.get(e) or chosen.get("*")
        if config is None:
            tag = default_simulator(e)
            if tag not in SIMULATORS:
                log.warning("default simulator %r of %s is not installed; using %r", tag, e, FALLBACK_SIMULATOR)
                tag = FALLBACK_SIMULATOR
            config = PluginConfig(kind=tag)
        out[e] = check("simulator", config)
    return out


def resolve_simulators(explainers: Sequence[str], simulators: Mapping[str, Any] | str | None = None) -> dict[str, str]:
    """Simulator tag per explainer tag (:func:`resolve` without the parameters)."""
    return {e: c.kind for e, c in resolve(explainers, simulators).items()}


def applies(simulator: Any, explanation: Explanation) -> bool:
    """Whether ``simulator`` can simulate ``explanation``: its ``applies()`` when it declares one
    (every simulator without it applies to every explanation)."""
    check_fn = getattr(type(simulator), "applies", None)
    return True if check_fn is None else bool(simulator.applies(explanation))


def fallback(explanation: Explanation, *, ontology: Any = None) -> tuple[str, Any]:
    """``(tag, simulator)``: the first of :data:`FALLBACK_CHAIN` that applies to ``explanation``."""
    for tag in FALLBACK_CHAIN:
        if tag in SIMULATORS:
            sim = build("simulator", tag, ontology=ontology)
            if applies(sim, explanation):
                return tag, sim
    return FALLBACK_SIMULATOR, build("simulator", FALLBACK_SIMULATOR, ontology=ontology)


__all__ = ["FALLBACK_CHAIN", "FALLBACK_SIMULATOR", "applies", "default_simulator", "fallback", "resolve",
           "resolve_simulators"]
