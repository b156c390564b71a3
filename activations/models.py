"""Loading a target model and locating its MLP units ("neurons").

The *units map* says, per architecture, which tensor is "the MLP neuron":

- Llama / Mistral / Qwen2-style: the input of ``mlp.down_proj``, i.e. ``act(gate_proj(x)) * up_proj(x)``
  (a forward *pre*-hook on ``down_proj``);
- GPT-2: the output of the MLP activation module ``mlp.act``;
- BERT: the output of ``intermediate`` (dense layer followed by the activation).

Only the base model (no LM / MLM head) is loaded: recording never needs the head.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from neurolabel.core.assets import SMOLLM2_NAME, smollm2_dir
from neurolabel.core.errors import ModelError

log = logging.getLogger(__name__)

HookKind = Literal["input", "output"]


@dataclass(frozen=True)
class UnitSpec:
    """Where the MLP units of one architecture family live."""

    layers: str
    """Attribute path, from the base model, of the list of transformer blocks."""
    module: str
    """Attribute path, from one block, of the module hooked."""
    hook: HookKind
    """``input``: the module's first positional input (forward pre-hook); ``output``: its output."""
    n_units: Callable[[Any], int]
    """Units per layer, from the model config."""
    description: str
    """What the unit is, in words."""


def _llama_units(cfg: Any) -> int:
    return int(cfg.intermediate_size)


def _gpt2_units(cfg: Any) -> int:
    return int(cfg.n_inner or 4 * cfg.n_embd)


_LLAMA = UnitSpec("layers", "mlp.down_proj", "input", _llama_units,
                  "act(gate_proj(x)) * up_proj(x): the input of mlp.down_proj")

UNIT_SPECS: dict[str, UnitSpec] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "gemma": _LLAMA,
    "gemma2": _LLAMA,
    "gpt2": UnitSpec("h", "mlp.act", "output", _gpt2_units,
                     "output of the MLP activation mlp.act (act(c_fc(x)))"),
    "bert": UnitSpec("encoder.layer", "intermediate", "output", _llama_units,
                     "output of intermediate: act(dense(x))"),
}
"""Architecture (``config.model_type``) → where its MLP units are."""


@dataclass(frozen=True)
class TargetModel:
    """A loaded target model whose MLP units are recorded."""

    name: str
    """Name the model is stored under (``smollm2-135m`` for the default)."""
    source: str
    """Where it was loaded from (a folder)."""
    architecture: str
    """``config.model_type`` (``llama``, ``gpt2``, ``bert``…)."""
    model: Any
    """The base torch module (no head), in eval mode."""
    tokenizer: Any
    """Its tokenizer."""
    n_layers: int
    """Number of transformer blocks."""
    n_units: int
    """MLP units per layer."""
    unit_map: dict = field(default_factory=dict)
    """JSON-able description of the hooked tensor (stored with the model)."""
    prefix_ids: tuple[int, ...] = ()
    """Special token ids the tokenizer puts before a text (e.g. BOS, ``[CLS]``); prepended to
    every window fed to the model, never recorded."""

    @property
    def device(self) -> Any:
        """The torch device the model lives on."""
        return next(self.model.parameters()).device

    def unit_spec(self) -> UnitSpec:
        """The :class:`UnitSpec` of this architecture."""
        return UNIT_SPECS[self.architecture]

    def unit_module(self, layer: int) -> Any:
        """The module hooked for ``layer`` (checked against :attr:`n_layers`)."""
        check_layers(self, [layer])
        spec = self.unit_spec()
        return _get_attr(_get_attr(self.model, spec.layers)[layer], spec.module)


def check_layers(target: "TargetModel | TargetInfo", layers: Any) -> list[int]:
    """The layers as a sorted list of ints, or a ModelError naming what exists."""
    out = sorted({int(x) for x in layers})
    if not out:
        raise ModelError("no layers requested")
    bad = [x for x in out if not 0 <= x < target.n_layers]
    if bad:
        raise ModelError(
            f"layer(s) {bad} do not exist in {target.name}: it has layers 0-{target.n_layers - 1}"
        )
    return out


def check_units(target: "TargetModel | TargetInfo", units: Any) -> list[int] | None:
    """The units as a sorted list of ints (None = all), or a ModelError naming what exists."""
    if units is None:
        return None
    out = sorted({int(x) for x in units})
    if not out:
        raise ModelError("an empty list of units was requested")
    bad = [x for x in out if not 0 <= x < target.n_units]
    if bad:
        shown = bad[:10]
        raise ModelError(
            f"unit(s) {shown}{'…' if len(bad) > 10 else ''} do not exist in {target.name}: "
            f"its layers have units 0-{target.n_units - 1}"
        )
    return out


def _get_attr(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def resolve_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; anything else unchanged."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _prefix_ids(tokenizer: Any) -> tuple[int, ...]:
    with_special = list(tokenizer("x")["input_ids"])
    plain = list(tokenizer("x", add_special_tokens=False)["input_ids"])
    if not plain:
        return ()
    for i in range(len(with_special) - len(plain) + 1):
        if with_special[i : i + len(plain)] == plain:
            return tuple(int(t) for t in with_special[:i])
    return ()


def _config_of(spec: str) -> tuple[str, Path, Any, str]:
    """``(name, folder, config, architecture)`` of a target model spec (``load_target``'s), read
    from its ``config.json`` alone; ModelError naming what is wrong."""
    if spec in ("default", SMOLLM2_NAME):
        path = smollm2_dir()
        name = SMOLLM2_NAME
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise ModelError(f"model path {str(path)!r} does not exist")
        if not (path / "config.json").is_file():
            raise ModelError(f"model path {str(path)!r} has no config.json: not a Hugging Face model folder")
        name = path.resolve().name
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path)
    except (ValueError, OSError, KeyError) as exc:
        raise ModelError(f"cannot read the config of {str(path)!r}: {exc}") from exc
    arch = getattr(config, "model_type", None)
    if arch not in UNIT_SPECS:
        raise ModelError(
            f"architecture {arch!r} of {str(path)!r} has no units map; known: {', '.join(sorted(UNIT_SPECS))}"
        )
    return name, path, config, arch


def _unit_map(arch: str) -> dict:
    unit = UNIT_SPECS[arch]
    return {"architecture": arch, "layers": unit.layers, "module": unit.module, "hook": unit.hook,
            "description": unit.description}


@dataclass(frozen=True)
class TargetInfo:
    """What is stored about a target model and checked against a run's layers and units, without
    its weights (:func:`describe_target`)."""

    name: str
    source: str
    architecture: str
    n_layers: int
    n_units: int
    unit_map: dict = field(default_factory=dict)
    vocab_size: int = 0
    """The config's vocabulary size (the tokenizer may add a few tokens): what a recording's per-type token
    sums are sized by (:func:`pipeline.run.record_passes`)."""


def describe_target(spec: str = "default") -> TargetInfo:
    """The name, architecture, layer and unit counts and units map :func:`load_target` gives for
    ``spec``, read from the model's config without loading its weights: the module is built on
    torch's ``meta`` device (shapes, no memory) to count its blocks as ``load_target`` counts them.
    What a labelling run's driver needs when the recording happens elsewhere (on a Ray cluster's
    actors): a model too big for the driver's machine is never loaded there. ModelError as
    :func:`load_target` raises it."""
    name, path, config, arch = _config_of(spec)
    unit = UNIT_SPECS[arch]
    import torch
    from transformers import AutoModel

    try:
        with torch.device("meta"):
            model = AutoModel.from_config(config)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot build the model of {str(path)!r} from its config: {exc}") from exc
    n_layers = len(_get_attr(model.base_model, unit.layers))
    return TargetInfo(name=name, source=str(path), architecture=arch, n_layers=n_layers,
                      n_units=unit.n_units(config), unit_map=_unit_map(arch),
                      vocab_size=int(getattr(config, "vocab_size", 0) or 0))


def load_target(spec: str = "default", *, device: str = "auto") -> TargetModel:
    """Load a target model: ``"default"`` (SmolLM2-135M-Instruct, cached safetensors) or the
    path of a local Hugging Face model folder.

    Raises ModelError for a missing folder, a folder that is not a model, or an architecture
    without a units map (the message lists the known ones).
    """
    name, path, config, arch = _config_of(spec)
    unit = UNIT_SPECS[arch]
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path, dtype="float32")
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the model in {str(path)!r}: {exc}") from exc
    model.eval()
    model.to(resolve_device(device))
    model = model.base_model
    n_layers = len(_get_attr(model, unit.layers))
    n_units = unit.n_units(config)
    unit_map = _unit_map(arch)
    log.info("loaded %s (%s, %d layers x %d units) from %s", name, arch, n_layers, n_units, path)
    return TargetModel(
        name=name,
        source=str(path),
        architecture=arch,
        model=model,
        tokenizer=tokenizer,
        n_layers=n_layers,
        n_units=n_units,
        unit_map=unit_map,
        prefix_ids=_prefix_ids(tokenizer),
    )
