"""Plugin registries: plugins are named by a tag, never chosen by if/elif over strings.

Third-party packages register through the entry-point groups ``neurolabel.explainers``,
``neurolabel.simulators`` and ``neurolabel.scorers`` (the entry point loads a factory).
"""

from __future__ import annotations

import importlib
import logging
import threading
from importlib.metadata import entry_points
from typing import Callable, Generic, Iterator, TypeVar

from neurolabel.core.errors import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping of tag → factory, filled by the ``register`` decorator, by built-in
    modules imported lazily, and by entry points."""

    def __init__(self, name: str, builtin_modules: tuple[str, ...] = ()) -> None:
        self.name = name
        self._builtin_modules = builtin_modules
        self._factories: dict[str, Callable[..., T]] = {}
        self._loaded = False
        self._lock = threading.RLock()  # re-entrant: a built-in module may look itself up while imported

    def register(self, kind: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: ``@EXPLAINERS.register("pmi")`` on a class or factory."""

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            self._factories[kind] = factory
            return factory

        return deco

    def _load(self) -> None:
        """Import the built-in modules and entry points once. Safe under concurrent first use:
        other threads wait on the lock, and ``_loaded`` is set only after every import finished
        (set before, a second thread saw an empty registry while the first was importing)."""
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            for mod in self._builtin_modules:
                try:
                    importlib.import_module(mod)
                except ModuleNotFoundError as exc:  # a built-in module not written yet
                    if exc.name != mod:
                        raise
                    log.debug("built-in plugin module %s not present", mod)
            for ep in entry_points(group=f"neurolabel.{self.name}"):
                if ep.name not in self._factories:
                    try:
                        self._factories[ep.name] = ep.load()
                    except Exception as exc:  # noqa: BLE001 - a broken third-party plugin
                        log.warning("cannot load %s plugin %r: %s", self.name, ep.name, exc)
            self._loaded = True

    def __getitem__(self, kind: str) -> Callable[..., T]:
        self._load()
        try:
            return self._factories[kind]
        except KeyError:
            raise ConfigError(
                f"unknown {self.name[:-1]} {kind!r}; known: {', '.join(sorted(self._factories)) or 'none'}"
            ) from None

    def __contains__(self, kind: object) -> bool:
        self._load()
        return kind in self._factories

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(sorted(self._factories))

    def tags(self) -> list[str]:
        """All registered tags, sorted."""
        return list(self)


EXPLAINERS: Registry = Registry(
    "explainers",
    ("neurolabel.explainers.concept_induction", "neurolabel.explainers.pmi", "neurolabel.explainers.llm_summary",
     "neurolabel.explainers.tokens", "neurolabel.explainers.output_tokens", "neurolabel.explainers.facets"),
)
SIMULATORS: Registry = Registry(
    "simulators",
    ("neurolabel.scoring.llm_simulator", "neurolabel.scoring.embedding_simulator", "neurolabel.scoring.symbolic_simulator",
     "neurolabel.scoring.lexical_simulator", "neurolabel.scoring.token_simulator", "neurolabel.scoring.next_token_simulator",
     "neurolabel.scoring.facet_simulator"),
)
SCORERS: Registry = Registry("scorers", ("neurolabel.scoring.scorers", "neurolabel.pipeline.causal"))
