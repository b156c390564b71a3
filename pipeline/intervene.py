"""Interventions on one MLP unit: ablate it, clamp it to a value or scale it, on every position
or only where it fires, and see what changes in the model's predictions.

:func:`intervening` is a context manager that puts a forward (pre-)hook on the unit's module
(the same module the recorder hooks, :mod:`activations.models`' units map) and replaces the
unit's column of a *copy* of the tensor; the hook is removed when the block ends, even on an
error, and no parameter is ever touched, so the model is exactly as before afterwards.
:func:`compare` runs prompts with and without an intervention: KL divergence of the next-token
distribution, the tokens whose probability moved most, and short greedy generations side by
side (for masked models such as BERT: the distribution at the ``[MASK]`` position and its best
filler). The causal score of a label is in :mod:`pipeline.causal`.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, replace
from typing import Any, Iterator, Literal, Sequence

from neurolabel.activations.models import TargetModel, check_layers, check_units
from neurolabel.core.errors import ConfigError, ModelError
from neurolabel.core.studies import InterventionMode
from neurolabel.core.types import NeuronId

log = logging.getLogger(__name__)

Where = Literal["all", "active"]
"""Positions intervened on: every position after the prefix, or only where the unit fires."""


@dataclass(frozen=True)
class Intervention:
    """What is done to one unit."""

    neuron: NeuronId
    """The unit."""
    mode: InterventionMode
    """``ablate`` (set to 0), ``clamp`` (set to ``value``) or ``scale`` (multiply by ``value``)."""
    value: float = 0.0
    """The clamp value or the scale factor (ignored by ``ablate``)."""
    where: Where = "all"
    """``all`` positions after the model's prefix tokens, or only those where the unit's own
    activation exceeds ``threshold``."""
    threshold: float = 0.0
    """Activation above which the unit counts as firing (``where="active"``)."""

    def describe(self) -> str:
        """E.g. ``clamp 12:34 to 5.0 (active positions)``."""
        what = {"ablate": f"ablate {self.neuron}", "clamp": f"clamp {self.neuron} to {self.value:g}",
                "scale": f"scale {self.neuron} by {self.value:g}"}[self.mode]
        return what + (f" (where > {self.threshold:g})" if self.where == "active" else "")


@dataclass(frozen=True)
class LanguageModel:
    """A target model together with its language-modelling head."""

    target: TargetModel
    """The model as the recorder sees it (``target.model`` is the base model inside ``head_model``)."""
    head_model: Any
    """The whole model with its head (``…ForCausalLM`` or ``…ForMaskedLM``), eval mode."""
    masked: bool
    """True for masked language models (BERT): predictions are read at ``[MASK]``."""


_MASKED = ("bert",)


def load_lm(spec: str = "default", *, device: str = "auto") -> LanguageModel:
    """Load a target model with its head: ``default`` (SmolLM2-135M) or a local Hugging Face
    folder of a supported architecture (ModelError otherwise)."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    from neurolabel.activations.models import load_target

    target = load_target(spec, device=device)
    masked = target.architecture in _MASKED
    cls = AutoModelForMaskedLM if masked else AutoModelForCausalLM
    try:
        head_model = cls.from_pretrained(target.source, dtype="float32")
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the language-modelling head of {target.source!r}: {exc}") from exc
    head_model.eval()
    head_model.to(target.device)
    return LanguageModel(target=replace(target, model=head_model.base_model), head_model=head_model, masked=masked)


def check_intervention(target: TargetModel, iv: Intervention) -> None:
    """ModelError for a unit the model does not have, ConfigError for a bad mode or value."""
    check_layers(target, [iv.neuron.layer])
    check_units(target, [iv.neuron.index])
    if iv.mode not in ("ablate", "clamp", "scale"):
        raise ConfigError(f"intervention mode {iv.mode!r} is not one of ablate, clamp, scale")
    if iv.where not in ("all", "active"):
        raise ConfigError(f"intervention positions {iv.where!r} are not one of all, active")
    if iv.value != iv.value or iv.value in (float("inf"), float("-inf")):
        raise ConfigError(f"intervention value {iv.value!r} is not a finite number")


def _apply(x: Any, iv: Intervention, prefix: int) -> Any:
    """A copy of the unit tensor ``x [batch, tokens, units]`` with the intervention applied."""
    import torch

    x = x.clone()
    col = x[:, prefix:, iv.neuron.index]
    if iv.mode == "ablate":
        new = torch.zeros_like(col)
    elif iv.mode == "clamp":
        new = torch.full_like(col, iv.value)
    else:
        new = col * iv.value
    if iv.where == "active":
        new = torch.where(col > iv.threshold, new, col)
    x[:, prefix:, iv.neuron.index] = new
    return x


@contextlib.contextmanager
def intervening(target: TargetModel, iv: Intervention) -> Iterator[None]:
    """Within the block, every forward pass of ``target.model`` sees the unit changed by ``iv``.
    The hook is removed on leaving the block, whatever happens inside it."""
    check_intervention(target, iv)
    module = target.unit_module(iv.neuron.layer)
    prefix = len(target.prefix_ids)
    if target.unit_spec().hook == "input":
        def pre_hook(_module, args):
            return (_apply(args[0], iv, prefix), *args[1:])

        handle = module.register_forward_pre_hook(pre_hook)
    else:
        def hook(_module, _args, output):
            return _apply(output, iv, prefix)

        handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def watching(target: TargetModel, neuron: NeuronId) -> Iterator[list[Any]]:
    """Within the block, the unit's activations ``[batch, tokens]`` (prefix dropped) of every
    forward pass are appended to the yielded list."""
    check_layers(target, [neuron.layer])
    check_units(target, [neuron.index])
    seen: list[Any] = []
    prefix = len(target.prefix_ids)
    module = target.unit_module(neuron.layer)

    def grab(x: Any) -> None:
        seen.append(x[:, prefix:, neuron.index].detach().float().cpu())

    if target.unit_spec().hook == "input":
        handle = module.register_forward_pre_hook(lambda _m, args: grab(args[0]))
    else:
        handle = module.register_forward_hook(lambda _m, _a, out: grab(out))
    try:
        yield seen
    finally:
        handle.remove()


# ---------------------------------------------------------------- prompts and predictions


def prompt_ids(lm: LanguageModel, prompt: str) -> list[int]:
    """Token ids fed for ``prompt``: the model's prefix tokens then the prompt (masked models:
    the tokenizer's own special tokens, ``[CLS] … [SEP]``)."""
    tok = lm.target.tokenizer
    if lm.masked:
        ids = list(tok(prompt)["input_ids"])
        if tok.mask_token_id not in ids:
            raise ConfigError(f"prompt {prompt!r} has no {tok.mask_token} token: a masked model predicts only there")
        return ids
    ids = list(lm.target.prefix_ids) + list(tok(prompt, add_special_tokens=False)["input_ids"])
    if len(ids) == len(lm.target.prefix_ids):
        raise ConfigError(f"prompt {prompt!r} has no tokens")
    return ids


def _batch(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    import torch

    T = max(len(x) for x in ids)
    rows = [list(x) + [pad_id] * (T - len(x)) for x in ids]
    mask = [[1] * len(x) + [0] * (T - len(x)) for x in ids]
    return torch.tensor(rows, dtype=torch.long), torch.tensor(mask, dtype=torch.long)


def _pad_id(lm: LanguageModel) -> int:
    tok = lm.target.tokenizer
    return int(tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0))


def log_probs(lm: LanguageModel, ids: Sequence[Sequence[int]]) -> list[Any]:
    """Per prompt, the ``[positions, vocabulary]`` log-probabilities of the next token (causal
    models: at every position; masked models: at each ``[MASK]``)."""
    import torch

    input_ids, mask = _batch(ids, _pad_id(lm))
    dev = lm.target.device
    with torch.inference_mode():
        logits = lm.head_model(input_ids=input_ids.to(dev), attention_mask=mask.to(dev)).logits.float()
    lp = torch.log_softmax(logits, dim=-1).cpu()
    out = []
    for r, x in enumerate(ids):
        if lm.masked:
            pos = [i for i, t in enumerate(x) if t == lm.target.tokenizer.mask_token_id]
            out.append(lp[r, pos])
        else:
            out.append(lp[r, len(lm.target.prefix_ids) - 1 if lm.target.prefix_ids else 0:len(x)])
    return out


def greedy(lm: LanguageModel, ids: Sequence[int], n_tokens: int) -> str:
    """Greedy continuation of ``ids`` by ``n_tokens`` tokens (masked models: the prompt with
    each ``[MASK]`` filled by its most likely token)."""
    import torch

    tok = lm.target.tokenizer
    dev = lm.target.device
    with torch.inference_mode():
        if lm.masked:
            x = torch.tensor([list(ids)], device=dev)
            best = lm.head_model(input_ids=x).logits[0].argmax(-1)
            filled = [int(best[i]) if t == tok.mask_token_id else t for i, t in enumerate(ids)]
            return tok.decode(filled, skip_special_tokens=True)
        x = torch.tensor([list(ids)], device=dev)
        new: list[int] = []
        for _ in range(n_tokens):
            nxt = int(lm.head_model(input_ids=x, use_cache=False).logits[0, -1].argmax())
            new.append(nxt)
            if nxt == tok.eos_token_id:
                break
            x = torch.cat([x, torch.tensor([[nxt]], device=dev)], dim=1)
    return tok.decode(new, skip_special_tokens=True)


@dataclass(frozen=True)
class PromptEffect:
    """What an intervention changed on one prompt."""

    prompt: str
    """The prompt."""
    kl: float
    """KL(before ‖ after) of the next-token distribution at the prompt's last position (masked
    models: at its first ``[MASK]``), in nats."""
    moved: tuple[tuple[str, float, float], ...]
    """The tokens whose probability moved most: ``(token, p before, p after)``, largest change first."""
    before: str
    """Greedy continuation without the intervention."""
    after: str
    """Greedy continuation with it."""
    unit_max: float
    """Largest activation of the unit on the prompt without the intervention."""


def compare(lm: LanguageModel, prompts: Sequence[str], iv: Intervention, *, top: int = 8,
            generate_tokens: int = 12) -> list[PromptEffect]:
    """Run ``prompts`` without and with ``iv`` (see the module docstring)."""
    import torch

    check_intervention(lm.target, iv)
    if not prompts:
        raise ConfigError("no prompts given")
    ids = [prompt_ids(lm, p) for p in prompts]
    with watching(lm.target, iv.neuron) as seen:
        base = log_probs(lm, ids)
    unit = seen[0]
    with intervening(lm.target, iv):
        after = log_probs(lm, ids)
        gen_after = [greedy(lm, x, generate_tokens) for x in ids]
    gen_before = [greedy(lm, x, generate_tokens) for x in ids]
    tok = lm.target.tokenizer
    out = []
    for r, p in enumerate(prompts):
        pos = 0 if lm.masked else -1
        lp0, lp1 = base[r][pos], after[r][pos]
        kl = float(torch.sum(lp0.exp() * (lp0 - lp1)))
        dp = lp1.exp() - lp0.exp()
        idx = torch.argsort(dp.abs(), descending=True)[:top].tolist()
        moved = tuple((tok.decode([i]), float(lp0[i].exp()), float(lp1[i].exp())) for i in idx)
        n = len(ids[r]) - len(lm.target.prefix_ids)
        out.append(PromptEffect(prompt=p, kl=max(kl, 0.0), moved=moved, before=gen_before[r], after=gen_after[r],
                                unit_max=float(unit[r, :n].max())))
    return out
