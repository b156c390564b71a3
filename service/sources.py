"""The one check of what corpora and models a client may name (jobs, ``POST /v1/explain``,
nightly configs, and again in the worker before it loads anything).

Allowed are: the built-in defaults, names an operator registered (``neurolabel corpora add``,
``neurolabel models add``), and paths whose real location (symlinks resolved) lies under one of
the operator's data roots (``NEUROLABEL_DATA_DIRS``). Anything else raises
:class:`ConfigError` naming the allowed names; no message carries a server path the client did
not give itself.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sqlalchemy.orm import Session

from neurolabel.core.errors import ConfigError

BUILTIN = {"model": ("default", "smollm2-135m"), "corpus": ("default", "wordnet"), "ontology": ("default",)}
"""Names every server knows."""
DEFAULT_MODEL_UNITS = 1536
"""MLP units per layer of the default model (SmolLM2-135M: intermediate size 1536)."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")


@dataclass(frozen=True)
class Source:
    """A corpus or model a client named, resolved for the loader."""

    kind: str
    """``corpus``, ``model`` or ``ontology``."""
    name: str
    """What the client wrote."""
    spec: str
    """What the loader gets: a built-in name or an absolute path."""


def is_plain_name(name: str) -> bool:
    """Whether ``name`` is a plain name (letters, digits, ``_.-``), not a path."""
    return bool(_NAME.match(name)) and name not in (".", "..")


def _under(path: str, roots: Sequence[str]) -> bool:
    for root in roots:
        real_root = os.path.realpath(os.path.expanduser(root))
        try:
            if os.path.commonpath([path, real_root]) == real_root:
                return True
        except ValueError:
            continue
    return False


def resolve_source(*, session: Session, kind: str, name: str, data_dirs: Sequence[str]) -> Source:
    """The source a client may use under ``name``; :class:`ConfigError` when it may not."""
    from neurolabel.storage.sources import source_names, source_path

    if kind not in BUILTIN:
        raise ValueError(f"kind must be one of {', '.join(BUILTIN)}, not {kind!r}")
    if name in BUILTIN[kind]:
        return Source(kind=kind, name=name, spec=name)
    if is_plain_name(name):
        path = source_path(session=session, kind=kind, name=name)
        if path is not None:
            return Source(kind=kind, name=name, spec=path)
    elif "\x00" not in name and (os.sep in name or name.startswith("~")) and data_dirs:
        real = os.path.realpath(os.path.expanduser(name))
        if _under(real, data_dirs):
            return Source(kind=kind, name=name, spec=real)
    allowed = list(BUILTIN[kind]) + source_names(session=session, kind=kind)
    shown = name if len(name) <= 80 else name[:77] + "..."
    where = ("or a path under the server's data directories (NEUROLABEL_DATA_DIRS)" if data_dirs
             else "(this server allows no paths: NEUROLABEL_DATA_DIRS is not set)")
    raise ConfigError(f"{kind} {shown!r} is not allowed: name one of {', '.join(allowed)} {where}")


def units_per_layer(source: Source) -> int | None:
    """MLP units per layer of a model source (read from its ``config.json``), or ``None`` when
    it cannot be told without loading the model."""
    if source.spec in BUILTIN["model"]:
        return DEFAULT_MODEL_UNITS
    try:
        cfg = json.loads((Path(source.spec) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for key in ("intermediate_size", "n_inner", "ffn_dim"):
        if isinstance(cfg.get(key), int):
            return cfg[key]
    if isinstance(cfg.get("n_embd"), int):
        return 4 * cfg["n_embd"]
    return None


_PATH = re.compile(r"(?<![\w:/.~-])(?:~|\.{1,2})?/[\w.\-]+(?:/[\w.\-]*)*")


def redact_paths(text: str) -> str:
    """``text`` with every absolute or home-relative path replaced by ``<path>`` (for errors
    that others may read)."""
    return _PATH.sub("<path>", text)
