"""The output-side explainer: what an MLP neuron *writes*, read from its weights.

A neuron's output direction ``w`` (the column of ``mlp.down_proj`` it multiplies in Llama-style
models, the row of ``mlp.c_proj`` in GPT-2) is decoded through the final norm's scale ``g`` and
the unembedding ``U``: ``logits = U · (g ⊙ w)`` is the change of the next-token logits per unit
of activation (the norm's division by the residual's RMS is a positive factor common to every
token, so it changes no ranking and is left out). The tokens with the largest entries are the
ones the neuron *promotes*, the smallest the ones it *suppresses*. No corpus and no LLM are
needed: :func:`decode_layer` decodes a whole layer with a few batched matrix products.

Architectures: Llama / Mistral / Qwen / Gemma (``down_proj`` column; Gemma's RMSNorm scale is
``1 + weight``) and GPT-2 (``c_proj`` row, ``ln_f`` scale). Encoders (BERT) have no next-token
unembedding behind their MLPs: :func:`output_weights` raises :class:`ModelError` naming the
architecture.

Simulation: an output-side label predicts no activation by itself; its default simulator is
``next_token`` (:mod:`scoring.next_token_simulator`), which predicts that the neuron fires at a
position whose *next* token is one it promotes — the output-side reading of "this neuron is for
X". Its agreement with the neuron's input-side label is measured separately by
:func:`agreement` and stored as a score part (scorer ``agreement``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from neurolabel.core.errors import ExplanationError, ModelError
from neurolabel.core.registry import EXPLAINERS
from neurolabel.core.types import Explanation, NeuronId, NeuronRecord, ScoreResult

log = logging.getLogger(__name__)

_LLAMA_LIKE = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2"})
_ONE_PLUS_SCALE = frozenset({"gemma", "gemma2"})

AGREEMENT_SCORER = "agreement"
"""Scorer tag of the stored agreement between a neuron's output-side and input-side labels."""


@dataclass(frozen=True)
class OutputWeights:
    """The weights that turn a layer's MLP neuron activations into next-token logits."""

    unembedding: Any
    """``U``: torch tensor ``(vocab, hidden)``, already multiplied by the final norm's scale."""
    architecture: str
    """``config.model_type`` of the model they come from."""


@dataclass(frozen=True)
class DecodedLayer:
    """Top promoted and suppressed tokens of the decoded neurons of one layer (arrays, not objects,
    so that decoding a whole model stays cheap)."""

    layer: int
    """Layer number."""
    units: np.ndarray
    """Neuron indices decoded, shape ``(n,)``."""
    promoted_ids: np.ndarray
    """Token ids with the largest logit weights, ``(n, k)``, largest first."""
    promoted_weights: np.ndarray
    """Their logit weights, ``(n, k)``."""
    suppressed_ids: np.ndarray
    """Token ids with the smallest (most negative) logit weights, ``(n, k)``, smallest first."""
    suppressed_weights: np.ndarray
    """Their logit weights, ``(n, k)``."""


def output_weights(target: Any) -> OutputWeights:
    """The final-norm-scaled unembedding of a loaded :class:`activations.models.TargetModel`.

    The unembedding is the input embedding when the model ties them, else ``lm_head.weight``
    read from the model folder's safetensors files (the loaded base model has no head)."""
    import torch

    arch = target.architecture
    base = target.model
    if arch in _LLAMA_LIKE:
        norm = base.norm
    elif arch == "gpt2":
        norm = base.ln_f
    else:
        raise ModelError(
            f"architecture {arch!r} of {target.name}: output-side decoding needs a causal LM whose MLP "
            f"output is read by a final norm and a next-token unembedding; supported: "
            f"{', '.join(sorted(_LLAMA_LIKE | {'gpt2'}))}"
        )
    with torch.no_grad():
        scale = norm.weight.detach().float()
        if arch in _ONE_PLUS_SCALE:
            scale = 1.0 + scale
        config = base.config
        if getattr(config, "tie_word_embeddings", True):
            unembed = base.get_input_embeddings().weight.detach().float()
        else:
            unembed = _lm_head(target.source, target.name).to(scale.device)
        if unembed.shape[1] != scale.shape[0]:
            raise ModelError(f"{target.name}: unembedding width {unembed.shape[1]} != hidden size {scale.shape[0]}")
        return OutputWeights(unembedding=unembed * scale, architecture=arch)


def _lm_head(source: str, name: str) -> Any:
    from safetensors import safe_open

    files = sorted(Path(source).glob("*.safetensors"))
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            for key in fh.keys():
                if key == "lm_head.weight" or key.endswith(".lm_head.weight"):
                    return fh.get_tensor(key).float()
    raise ModelError(
        f"{name}: the model does not tie its embeddings and no lm_head.weight was found in "
        f"{len(files)} safetensors file(s) of {source!r}"
    )


def neuron_directions(target: Any, layer: int, units: Sequence[int] | None = None) -> Any:
    """Output directions of ``layer``'s neurons, a torch tensor ``(n_units, hidden)`` (row i = what
    neuron ``units[i]`` adds to the residual stream per unit of activation)."""
    from neurolabel.activations.models import check_layers, check_units

    check_layers(target, [layer])
    arch = target.architecture
    block = _blocks(target)[layer]
    if arch in _LLAMA_LIKE:
        w = block.mlp.down_proj.weight.detach().float().T  # (inter, hidden)
    elif arch == "gpt2":
        w = block.mlp.c_proj.weight.detach().float()  # Conv1D: (n_inner, n_embd)
    else:
        output_weights(target)  # raises the architecture error
        raise AssertionError("unreachable")
    if units is not None:
        idx = check_units(target, units)
        w = w[idx]
    return w


def _blocks(target: Any) -> Any:
    obj = target.model
    for part in target.unit_spec().layers.split("."):
        obj = getattr(obj, part)
    return obj


def decode_layer(target: Any, layer: int, units: Sequence[int] | None = None, *, top_k: int = 10,
                 weights: OutputWeights | None = None, chunk: int = 512) -> DecodedLayer:
    """Top ``top_k`` promoted and suppressed tokens of every neuron of ``layer`` (or ``units``):
    one ``(chunk × hidden) @ (hidden × vocab)`` product and two row-wise ``topk`` per chunk of neurons
    (``topk`` along contiguous rows is ~7× faster than along columns)."""
    import torch

    if top_k < 1:
        raise ModelError(f"top_k must be at least 1, got {top_k}")
    from neurolabel.activations.models import check_units

    weights = weights or output_weights(target)
    unit_list = np.arange(target.n_units) if units is None else np.asarray(check_units(target, units))
    dirs = neuron_directions(target, layer, None if units is None else unit_list.tolist())
    k = min(top_k, weights.unembedding.shape[0])
    p_ids, p_w, s_ids, s_w = [], [], [], []
    with torch.no_grad():
        for start in range(0, dirs.shape[0], chunk):
            logits = dirs[start:start + chunk] @ weights.unembedding.T  # (n, vocab): top-k along rows
            top = torch.topk(logits, k, dim=1)
            bot = torch.topk(logits, k, dim=1, largest=False)
            p_ids.append(top.indices.cpu().numpy())
            p_w.append(top.values.cpu().numpy())
            s_ids.append(bot.indices.cpu().numpy())
            s_w.append(bot.values.cpu().numpy())
    return DecodedLayer(layer=layer, units=unit_list, promoted_ids=np.concatenate(p_ids),
                        promoted_weights=np.concatenate(p_w), suppressed_ids=np.concatenate(s_ids),
                        suppressed_weights=np.concatenate(s_w))


def vocabulary(tokenizer: Any, size: int) -> list[str]:
    """Every token id's string as the tokenizer decodes it alone (spaces kept), as window tokens are."""
    return [tokenizer.decode([i]) for i in range(size)]


def _show(token: str) -> str:
    s = token.strip()
    return s if s else repr(token)


def describe(promoted: Sequence[str], suppressed: Sequence[str], shown: int = 5) -> str:
    """``"promotes: dog, dogs, puppy · suppresses: cat"`` (``shown`` tokens of each, deduplicated)."""
    def pick(tokens: Sequence[str]) -> str:
        out: list[str] = []
        for t in tokens:
            s = _show(t)
            if s not in out:
                out.append(s)
            if len(out) == shown:
                break
        return ", ".join(out)

    return f"promotes: {pick(promoted)} · suppresses: {pick(suppressed)}"


def layer_explanations(decoded: DecodedLayer, vocab: Sequence[str], *, model: str, version: str = "1",
                       params: Mapping[str, Any] | None = None, shown: int = 5) -> Iterator[Explanation]:
    """One :class:`core.Explanation` per decoded neuron: readable text and ``structured`` =
    ``{"promoted": [{"id", "token", "weight"}…], "suppressed": […]}``."""
    for row, unit in enumerate(decoded.units):
        promoted = [{"id": int(i), "token": vocab[int(i)], "weight": round(float(w), 6)}
                    for i, w in zip(decoded.promoted_ids[row], decoded.promoted_weights[row])]
        suppressed = [{"id": int(i), "token": vocab[int(i)], "weight": round(float(w), 6)}
                      for i, w in zip(decoded.suppressed_ids[row], decoded.suppressed_weights[row])]
        yield Explanation(
            model=model,
            neuron=NeuronId(decoded.layer, int(unit)),
            explainer=OutputTokensExplainer.kind,
            explainer_version=version,
            text=describe([p["token"] for p in promoted], [s["token"] for s in suppressed], shown),
            structured={"promoted": promoted, "suppressed": suppressed},
            params=dict(params or {}),
        )


@EXPLAINERS.register("output_tokens")
class OutputTokensExplainer:
    """Labels a neuron by the tokens its output direction promotes and suppresses."""

    kind = "output_tokens"
    version = "1"
    default_simulator = "next_token"

    def __init__(self, target: Any = None, *, top_k: int = 10, shown: int = 5) -> None:
        self.target = target
        """The loaded :class:`activations.models.TargetModel` whose neurons are decoded."""
        self.top_k = top_k
        """Promoted and suppressed tokens kept per neuron."""
        self.shown = shown
        """Tokens of each list named in the text."""
        self._weights: OutputWeights | None = None
        self._vocab: list[str] | None = None

    @classmethod
    def from_defaults(cls, model: str = "default", **kwargs: Any) -> "OutputTokensExplainer":
        """The explainer over a model loaded by :func:`activations.models.load_target`."""
        from neurolabel.activations.models import load_target

        return cls(load_target(model, device="cpu"), **kwargs)

    @property
    def params(self) -> dict[str, Any]:
        """Parameters stored with each explanation."""
        return {"top_k": self.top_k, "shown": self.shown}

    def _ready(self) -> tuple[OutputWeights, list[str]]:
        if self.target is None:
            raise ExplanationError("output_tokens explainer has no model: build it with from_defaults(model)")
        if self._weights is None:
            self._weights = output_weights(self.target)
        if self._vocab is None:
            self._vocab = vocabulary(self.target.tokenizer, self._weights.unembedding.shape[0])
        return self._weights, self._vocab

    def explain_layer(self, layer: int, units: Sequence[int] | None = None) -> list[Explanation]:
        """Explanations of every neuron of ``layer`` (or ``units``), one batched decode."""
        weights, vocab = self._ready()
        decoded = decode_layer(self.target, layer, units, top_k=self.top_k, weights=weights)
        return list(layer_explanations(decoded, vocab, model=self.target.name, version=self.version,
                                       params=self.params, shown=self.shown))

    def explain(self, record: NeuronRecord) -> list[Explanation]:
        """The record's neuron decoded from the model's weights (its windows are not needed).
        Raises :class:`ExplanationError` when the record is of another model or an
        architecture that cannot be decoded."""
        if self.target is None:
            raise ExplanationError("output_tokens explainer has no model: build it with from_defaults(model)")
        if record.model != self.target.name:
            raise ExplanationError(
                f"output_tokens decodes the weights of {self.target.name!r}, but the record "
                f"of neuron {record.neuron} is of model {record.model!r}: build the explainer with that model "
                "(OutputTokensExplainer.from_defaults(model=...))"
            )
        try:
            return self.explain_layer(record.neuron.layer, [record.neuron.index])
        except ModelError as exc:
            raise ExplanationError(f"neuron {record.neuron} of {record.model!r}: {exc}") from exc


# ---- agreement with the input side ---------------------------------------------------------------
def agreement(output: Explanation, label: Explanation, simulator: Any) -> ScoreResult:
    """How far the tokens an output-side explanation promotes fall inside an input-side label.

    Each promoted token is simulated alone by ``simulator`` (the one the label is scored with:
    a class expression holds for it, or it names one of the label's words); a prediction above
    half the simulator's range counts as inside. Parts: ``agreement`` — the share of the
    promoted tokens' positive logit weight that falls inside the label (0–1); ``top_token_inside``
    (1/0); ``n_inside`` of ``n_promoted``. Returned as a :class:`core.ScoreResult` of scorer
    :data:`AGREEMENT_SCORER` whose main ``score`` is ``None``: agreement is not a held-out
    correlation, so it never makes an output-side label the neuron's accepted label."""
    promoted = list(output.structured.get("promoted") or ())
    if not promoted:
        raise ExplanationError(f"explanation {output.text!r} of neuron {output.neuron} has no promoted tokens")
    tokens = [str(p["token"]) for p in promoted]
    sims = [simulator.simulate(label, [t]).expected_activations[0] for t in tokens]
    hi = max(sims) if sims else 0.0
    inside = [s > 0 and s >= 0.5 * max(hi, 1e-12) for s in sims]
    w = np.clip(np.array([float(p["weight"]) for p in promoted]), 0.0, None)
    share = float(w[inside].sum() / w.sum()) if w.sum() > 0 else float(np.mean(inside))
    parts = {"agreement": round(share, 6), "top_token_inside": 1.0 if inside[0] else 0.0,
             "n_inside": float(sum(inside)), "n_promoted": float(len(tokens))}
    return ScoreResult(score=None, scorer=AGREEMENT_SCORER, simulator=str(getattr(simulator, "kind", "")),
                       parts=parts, n_tokens=len(tokens), method=f"vs {label.explainer}"[:100])
