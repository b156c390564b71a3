"""Plugins built from their tagged configurations by the registry.

``build("explainer", {"kind": "pmi", "lam": 0.8}, ontology=…)`` looks the tag up in
:data:`core.registry.EXPLAINERS` and calls the plugin's ``from_defaults(**params)`` factory
(its constructor when it has none). A parameter the plugin does not take raises
:class:`ConfigError` naming the plugin and its allowed parameters. Parameters are the factory's
and the constructor's keyword arguments with plain (JSON) defaults; the heavy resources a
constructor takes (:data:`RESOURCES`: the annotator of the run's ontology, chat backends,
embedders …) are not parameters: the factory loads them, and the run's ontology is handed to
every factory that takes an ``annotator``, so the explainers and the symbolic simulators of one
run share it.

Built plugins are kept per process (keyed by tag, parameters and ontology), as loading them
(ontologies, models) is the slow part.
"""

from __future__ import annotations

import inspect
import logging
import threading
from typing import Any, Mapping

from neurolabel.core.errors import ConfigError
from neurolabel.core.registry import EXPLAINERS, SCORERS, SIMULATORS, Registry
from neurolabel.pipeline.spec import PluginConfig, plugin_config

log = logging.getLogger(__name__)

REGISTRIES: dict[str, Registry] = {"explainer": EXPLAINERS, "simulator": SIMULATORS, "scorer": SCORERS}
"""Plugin role -> its registry."""

RESOURCES = frozenset({"annotator", "backend", "embedder", "explainers", "simulators", "target", "prompts"})
"""Constructor arguments that are loaded resources, never configuration parameters."""

_SCALARS = (int, float, str, bool, type(None), tuple)

_lock = threading.Lock()
_built: dict[tuple, Any] = {}


def _factory(role: str, kind: str) -> Any:
    if role not in REGISTRIES:
        raise ValueError(f"plugin role must be one of {', '.join(REGISTRIES)}, not {role!r}")
    return REGISTRIES[role][kind]  # ConfigError naming the known tags


def _settable(fn: Any, *, skip_first: bool) -> tuple[dict[str, inspect.Parameter], bool]:
    """(keyword parameters with plain defaults, whether ``fn`` takes ``**kwargs``)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return {}, True
    out: dict[str, inspect.Parameter] = {}
    var_kw = False
    params = list(sig.parameters.values())
    for i, p in enumerate(params):
        if skip_first and i == 0 and p.name in ("self", "cls"):
            continue
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in RESOURCES:
            if p.default is not p.empty and isinstance(p.default, _SCALARS):
                out[p.name] = p
    return out, var_kw


def allowed_params(role: str, kind: str) -> list[str]:
    """The configuration parameters plugin ``kind`` takes, sorted."""
    factory = _factory(role, kind)
    make = getattr(factory, "from_defaults", None)
    if make is None:
        init = factory.__init__ if inspect.isclass(factory) else factory
        params, _ = _settable(init, skip_first=inspect.isclass(factory))
        return sorted(params)
    params, var_kw = _settable(make, skip_first=False)
    if var_kw and inspect.isclass(factory):
        params.update(_settable(factory.__init__, skip_first=True)[0])
    return sorted(params)


def check(role: str, config: str | Mapping[str, Any] | PluginConfig) -> PluginConfig:
    """The configuration, validated without building anything: the tag is registered and every
    parameter is one the plugin takes (:class:`ConfigError` otherwise)."""
    config = plugin_config(config)
    allowed = allowed_params(role, config.kind)
    unknown = sorted(set(config.params) - set(allowed))
    if unknown:
        raise ConfigError(f"{role} {config.kind!r}: unknown parameter(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(allowed) or 'none'}")
    return config


def _make(role: str, config: PluginConfig, annotator: Any) -> Any:
    factory = _factory(role, config.kind)
    make = getattr(factory, "from_defaults", None) or factory
    kwargs = dict(config.params)
    if annotator is not None:
        try:
            takes = "annotator" in inspect.signature(make).parameters
        except (TypeError, ValueError):
            takes = False
        if takes:
            kwargs["annotator"] = annotator
    try:
        return make(**kwargs)
    except TypeError as exc:  # a parameter of the right name but the wrong kind of value
        raise ConfigError(f"{role} {config.kind!r}: cannot be built from {config.as_json()}: {exc}") from None


def build(role: str, config: str | Mapping[str, Any] | PluginConfig, *, ontology: Any = None) -> Any:
    """The process-wide instance of the configured plugin (built on first use).

    ``ontology``: a :class:`pipeline.ontology.RunOntology` (``None``: the default WordNet one,
    which each plugin's factory loads itself)."""
    config = check(role, config)
    key = (role, *config.key(), getattr(ontology, "key", None))
    with _lock:
        if key not in _built:
            log.info("building %s %s", role, config.as_json())
            _built[key] = _make(role, config, getattr(ontology, "annotator", None) if ontology is not None else None)
        return _built[key]


__all__ = ["REGISTRIES", "RESOURCES", "allowed_params", "build", "check"]
