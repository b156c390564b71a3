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


def _params(role: str, kind: str) -> dict[str, inspect.Parameter]:
    factory = _factory(role, kind)
    make = getattr(factory, "from_defaults", None)
    if make is None:
        init = factory.__init__ if inspect.isclass(factory) else factory
        return _settable(init, skip_first=inspect.isclass(factory))[0]
    params, var_kw = _settable(make, skip_first=False)
    if var_kw and inspect.isclass(factory):
        params = {**_settable(factory.__init__, skip_first=True)[0], **params}
    return params


def allowed_params(role: str, kind: str) -> list[str]:
    """The configuration parameters plugin ``kind`` takes, sorted."""
    return sorted(_params(role, kind))


def _type_error(param: inspect.Parameter, value: Any) -> str | None:
    """Why ``value`` cannot be given for ``param`` (judged by its default), or ``None``."""
    default = param.default
    if value is None:
        return None if default is None or "None" in str(param.annotation) else "must not be null"
    if default is None:
        return None
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    else:  # tuple
        ok = isinstance(value, (list, tuple))
    return None if ok else f"must be {type(default).__name__ if not isinstance(default, tuple) else 'a list'}"


def check(role: str, config: str | Mapping[str, Any] | PluginConfig) -> PluginConfig:
    """The configuration, validated without building anything: the tag is registered and every
    parameter is one the plugin takes (:class:`ConfigError` otherwise)."""
    config = plugin_config(config)
    params = _params(role, config.kind)
    unknown = sorted(set(config.params) - set(params))
    if unknown:
        raise ConfigError(f"{role} {config.kind!r}: unknown parameter(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(sorted(params)) or 'none'}")
    for name, value in config.params.items():
        why = _type_error(params[name], value)
        if why is not None:
            raise ConfigError(f"{role} {config.kind!r}: parameter {name} {why}, not {value!r}")
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
    if isinstance(config, str):  # a bare tag built before: its key without parsing a config (~0.1 ms a call)
        got = _built.get((role, config, "{}", getattr(ontology, "key", None)))
        if got is not None:
            return got
    config = plugin_config(config)
    key = (role, *config.key(), getattr(ontology, "key", None))
    got = _built.get(key)  # built before, so checked before (the check reads signatures: ~0.1 ms)
    if got is not None:
        return got
    config = check(role, config)
    with _lock:
        if key not in _built:
            log.info("building %s %s", role, config.as_json())
            _built[key] = _make(role, config, getattr(ontology, "annotator", None) if ontology is not None else None)
        return _built[key]


def clear() -> None:
    """Forget the plugins built so far (e.g. after the settings that their factories read changed:
    another LLM endpoint)."""
    with _lock:
        _built.clear()


__all__ = ["REGISTRIES", "RESOURCES", "allowed_params", "build", "check", "clear"]
