"""Contrast studies: which neurons separate two sets of texts.

Both sets are streamed through the target model once (examples truncated to
``max_example_tokens``, batched by length, right-padded; the model's prefix tokens such as
``<|im_start|>`` are fed first, as the recorder does, and never scored). Inside the unit hooks
every example becomes one number per neuron, the max and the mean of its tokens' activations.
Memory is bounded whatever the number of examples:

- **streaming sums** per side and neuron (count, sum, sum of squares of both scores, float64)
  give the means, standard deviations and standardised mean differences over *every* example;
- **a reservoir** per side (algorithm R, fixed seed, the same examples for every neuron) keeps
  the ranked score of at most ``reservoir`` examples; AUROC and p-values are computed on it —
  exactly on all examples while a side has at most ``reservoir`` of them, on a uniform sample
  beyond.

p-values (Mann–Whitney U, or a permutation test) are corrected over every neuron tested
(Benjamini–Hochberg); the neurons whose q-value is at most ``alpha`` and whose AUROC is at
least ``min_effect`` away from 0.5 are kept, best separated first (the statistics live in
:mod:`scoring.contrast_stats`). ``bench/contrast.py`` measures the cost against bare forward
passes over the same examples.
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from neurolabel.activations.models import TargetModel, check_layers
from neurolabel.core.errors import ConfigError, CorpusError
from neurolabel.core.studies import ContrastStudy, ContrastTest, ExampleScore, NeuronContrast, SetFingerprint
from neurolabel.core.types import NeuronId
from neurolabel.scoring import contrast_stats as cs

log = logging.getLogger(__name__)

_SCORES = ("max", "mean")
_TESTS = ("mannwhitney", "permutation")
_ROW_CHUNK = 4096


@dataclass(frozen=True)
class ContrastSpec:
    """Everything a contrast run needs besides the two sets of texts."""

    model: str = "default"
    """``default`` (SmolLM2-135M) or a local Hugging Face model folder."""
    layers: tuple[int, ...] | None = None
    """Layers tested (``None`` = all)."""
    name: str = "contrast"
    """Name of the stored study."""
    score: ExampleScore = "max"
    """Per-example score ranked and tested (the other one is summarised too)."""
    test: ContrastTest = "mannwhitney"
    """Test behind the p-values."""
    alpha: float = 0.05
    """Largest Benjamini–Hochberg q-value of a kept neuron."""
    min_effect: float = 0.1
    """Smallest ``|AUROC - 0.5|`` of a kept neuron."""
    keep: int = 500
    """At most this many neurons are kept (best first)."""
    reservoir: int = 256
    """Examples per side the rank statistics are computed on (all of them when a side has fewer)."""
    max_example_tokens: int = 64
    """Tokens of an example streamed (longer ones are truncated)."""
    batch_size: int = 16
    """Examples per forward pass."""
    n_permutations: int = 1000
    """Relabellings of the permutation test."""
    seed: int = 0
    """Seeds the reservoirs and the permutations."""
    label: int = 0
    """Label this many of the top neurons right away (0 = none)."""
    explainers: tuple[str, ...] = ("pmi",)
    """Explainers used by ``label``."""

    def check(self) -> None:
        """ConfigError naming the first bad setting."""
        if self.score not in _SCORES:
            raise ConfigError(f"score {self.score!r} is not one of {', '.join(_SCORES)}")
        if self.test not in _TESTS:
            raise ConfigError(f"test {self.test!r} is not one of {', '.join(_TESTS)}")
        if not 0.0 < self.alpha <= 1.0:
            raise ConfigError(f"alpha must lie in (0, 1], got {self.alpha}")
        if not 0.0 <= self.min_effect < 0.5:
            raise ConfigError(f"min_effect must lie in [0, 0.5), got {self.min_effect}")
        for name, value, low in (("keep", self.keep, 1), ("reservoir", self.reservoir, 2),
                                 ("max_example_tokens", self.max_example_tokens, 1),
                                 ("batch_size", self.batch_size, 1), ("n_permutations", self.n_permutations, 1),
                                 ("label", self.label, 0)):
            if value < low:
                raise ConfigError(f"{name} must be >= {low}, got {value}")
        if not self.name.strip():
            raise ConfigError("the study's name is empty")


@dataclass
class _Side:
    """Streaming state of one side (internal): sums over every example and the reservoir."""

    name: str
    n: int = 0
    n_tokens: int = 0
    sums: Any = None  # [4, LU] float64: sum max, sum max², sum mean, sum mean²
    res: Any = None  # [R, LU] float32 ranked score of the reservoir examples
    fill: int = 0
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    digest: Any = field(default_factory=hashlib.sha256)


class _Accumulator:
    """Reduces each layer's ``[batch, tokens, units]`` tensor to per-example max and mean in the
    hook, then folds the batch into the side's sums and reservoir."""

    def __init__(self, target: TargetModel, layers: list[int], *, reservoir: int, score: str,
                 batch_size: int) -> None:
        self.target = target
        self.layers = layers
        self.col = {layer: i * target.n_units for i, layer in enumerate(layers)}
        self.LU = len(layers) * target.n_units
        self.reservoir = reservoir
        self.score_row = _SCORES.index(score)
        self.batch_size = batch_size
        self.mask: Any = None
        self.lengths: Any = None
        self.b_max: Any = None
        self.b_mean: Any = None

    def allocate(self, side: _Side) -> None:
        import torch

        dev = self.target.device
        side.sums = torch.zeros((4, self.LU), dtype=torch.float64, device=dev)
        side.res = torch.zeros((self.reservoir, self.LU), dtype=torch.float32, device=dev)
        if self.b_max is None:
            self.b_max = torch.empty((self.batch_size, self.LU), device=dev)
            self.b_mean = torch.empty((self.batch_size, self.LU), device=dev)

    def on_layer(self, layer: int, acts: Any) -> None:
        import torch

        p = len(self.target.prefix_ids)
        x = acts[:, p:, :].float()
        B, c0 = x.shape[0], self.col[layer]
        cols = slice(c0, c0 + x.shape[2])
        mask = self.mask[:, :, None]
        self.b_max[:B, cols] = x.masked_fill(~mask, -torch.inf).amax(dim=1)
        self.b_mean[:B, cols] = (x * mask).sum(dim=1) / self.lengths[:, None]

    def fold(self, side: _Side, B: int) -> None:
        import torch

        mx, mn = self.b_max[:B], self.b_mean[:B]
        s = side.sums
        s[0] += mx.sum(dim=0, dtype=torch.float64)
        s[1] += torch.linalg.vecdot(mx, mx, dim=0).double()
        s[2] += mn.sum(dim=0, dtype=torch.float64)
        s[3] += torch.linalg.vecdot(mn, mn, dim=0).double()
        ranked = mx if self.score_row == 0 else mn
        for row in range(B):
            side.n += 1
            if side.fill < self.reservoir:
                slot = side.fill
                side.fill += 1
            else:
                slot = side.rng.randrange(side.n)
                if slot >= self.reservoir:
                    continue
            side.res[slot] = ranked[row]


def _tokenized(target: TargetModel, texts: Iterable[str], max_tokens: int, chunk: int,
               side: _Side) -> Iterator[list[list[int]]]:
    """Token-id lists of ``chunk`` texts at a time, sorted by length within the chunk."""
    tok = target.tokenizer

    def _flush(buf: list[str]) -> list[list[int]]:
        ids = [list(map(int, x[:max_tokens])) for x in tok(buf, add_special_tokens=False)["input_ids"]]
        for text, x in zip(buf, ids):
            if not x:
                raise CorpusError(f"set {side.name!r}: example {text!r} has no tokens")
        return sorted(ids, key=len)

    buf: list[str] = []
    for text in texts:
        side.digest.update(text.encode("utf-8") + b"\n")
        buf.append(text)
        if len(buf) >= chunk:
            yield _flush(buf)
            buf = []
    if buf:
        yield _flush(buf)


def _batches(ids: list[list[int]], batch_size: int) -> Iterator[list[list[int]]]:
    for i in range(0, len(ids), batch_size):
        yield ids[i:i + batch_size]


def _feed(target: TargetModel, acc: _Accumulator, batch: list[list[int]], pad_id: int) -> None:
    import torch

    prefix = list(target.prefix_ids)
    T = max(len(x) for x in batch)
    rows = [prefix + x + [pad_id] * (T - len(x)) for x in batch]
    mask = [[1] * (len(prefix) + len(x)) + [0] * (T - len(x)) for x in batch]
    dev = target.device
    attn = torch.tensor(mask, dtype=torch.long, device=dev)
    acc.mask = attn[:, len(prefix):].bool()
    acc.lengths = torch.tensor([len(x) for x in batch], dtype=torch.float32, device=dev)
    _forward(target, torch.tensor(rows, dtype=torch.long, device=dev), attn)


def _forward(target: TargetModel, input_ids: Any, attention_mask: Any) -> None:
    """:func:`activations.units.run_forward` with an attention mask (padded batches; BERT
    attends both ways); ends early after the last hooked layer as it does."""
    from neurolabel.activations import units

    try:
        target.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except units._StopForward:  # the hooks end the pass after the last tested layer
        pass


def stream_sets(target: TargetModel, set_a: Iterable[str], set_b: Iterable[str], *, layers: Sequence[int],
                spec: ContrastSpec, names: tuple[str, str] = ("a", "b"),
                on_batch: Callable[[str, int], None] | None = None,
                should_stop: Callable[[], bool] | None = None) -> tuple[_Side, _Side, _Accumulator]:
    """Stream both sets through the model once (see the module docstring); returns the two
    sides' state. ``on_batch(side, examples_so_far)`` is called after each batch."""
    import torch

    from neurolabel.activations.units import unit_hooks

    layers = check_layers(target, layers)
    acc = _Accumulator(target, layers, reservoir=spec.reservoir, score=spec.score, batch_size=spec.batch_size)
    tok = target.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    sides = []
    with torch.inference_mode(), unit_hooks(target, layers, acc.on_layer):
        for k, (name, texts) in enumerate(zip(names, (set_a, set_b))):
            side = _Side(name=name, rng=random.Random(spec.seed * 2 + k))
            acc.allocate(side)
            for chunk in _tokenized(target, texts, spec.max_example_tokens, 64 * spec.batch_size, side):
                for batch in _batches(chunk, spec.batch_size):
                    if should_stop is not None and should_stop():
                        raise InterruptedError("contrast stopped")
                    _feed(target, acc, batch, pad_id)
                    acc.fold(side, len(batch))
                    side.n_tokens += sum(len(x) for x in batch)
                    if on_batch is not None:
                        on_batch(name, side.n)
            if side.n < 2:
                raise CorpusError(f"set {name!r} holds {side.n} example(s); a contrast needs at least 2 per side")
            sides.append(side)
    return sides[0], sides[1], acc


def _fingerprint(side: _Side) -> SetFingerprint:
    return SetFingerprint(name=side.name, sha256=side.digest.hexdigest(), n_examples=side.n, n_tokens=side.n_tokens)


def _stats(a: _Side, b: _Side, spec: ContrastSpec) -> dict[str, np.ndarray]:
    """Per-neuron statistics of both sides (rank statistics on the reservoirs, chunked over
    neurons so the temporary arrays stay small)."""
    ra = a.res[:a.fill].t().cpu().numpy()
    rb = b.res[:b.fill].t().cpu().numpy()
    LU = ra.shape[0]
    auc, p = np.empty(LU), np.empty(LU)
    for s in range(0, LU, _ROW_CHUNK):
        xa, xb = ra[s:s + _ROW_CHUNK].astype(np.float64), rb[s:s + _ROW_CHUNK].astype(np.float64)
        if spec.test == "mannwhitney":
            auc[s:s + _ROW_CHUNK], p[s:s + _ROW_CHUNK] = cs.mann_whitney(xa, xb)
        else:
            auc[s:s + _ROW_CHUNK] = cs.auroc(xa, xb)
            p[s:s + _ROW_CHUNK] = cs.permutation_p(xa, xb, n_permutations=spec.n_permutations, seed=spec.seed)
    sa, sb = a.sums.cpu().numpy(), b.sums.cpu().numpy()
    row = _SCORES.index(spec.score) * 2
    other = 2 - row
    out = {
        "auroc": auc, "p": p, "q": cs.benjamini_hochberg(p),
        "smd": cs.standardised_mean_difference(a.n, sa[row], sa[row + 1], b.n, sb[row], sb[row + 1]),
        "smd_other": cs.standardised_mean_difference(a.n, sa[other], sa[other + 1], b.n, sb[other], sb[other + 1]),
        "mean_a": sa[row] / a.n, "mean_b": sb[row] / b.n,
        "std_a": np.sqrt(np.maximum(sa[row + 1] / a.n - (sa[row] / a.n) ** 2, 0.0)),
        "std_b": np.sqrt(np.maximum(sb[row + 1] / b.n - (sb[row] / b.n) ** 2, 0.0)),
    }
    out["_ra"], out["_rb"] = ra, rb
    return out


def _f32(x: float) -> float:
    """A float32 value in its shortest decimal form that reads back as the same float32 (9
    significant digits): compact in JSON, and ranks exactly as the value tested."""
    return float(f"{float(x):.9g}")


def _opt(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def rank_neurons(st: dict[str, np.ndarray], *, layers: Sequence[int], n_units: int,
                 spec: ContrastSpec) -> list[NeuronContrast]:
    """The kept neurons, best first: largest ``|AUROC - 0.5|``, then smallest q-value, then
    largest ``|d|``."""
    effect = np.abs(st["auroc"] - 0.5)
    q = np.where(np.isnan(st["q"]), np.inf, st["q"])
    d = np.nan_to_num(np.abs(st["smd"]), nan=0.0)
    ok = np.flatnonzero((q <= spec.alpha) & (effect >= spec.min_effect))
    order = ok[np.lexsort((-d[ok], q[ok], -effect[ok]))][: spec.keep]
    out = []
    for rank, c in enumerate(order.tolist()):
        out.append(NeuronContrast(
            neuron=NeuronId(int(layers[c // n_units]), int(c % n_units)), rank=rank,
            auroc=float(st["auroc"][c]), p_value=float(st["p"][c]), q_value=float(st["q"][c]),
            smd=_opt(st["smd"][c]), smd_other=_opt(st["smd_other"][c]),
            mean_a=float(st["mean_a"][c]), mean_b=float(st["mean_b"][c]),
            std_a=float(st["std_a"][c]), std_b=float(st["std_b"][c]),
            sample_a=tuple(_f32(v) for v in st["_ra"][c]),
            sample_b=tuple(_f32(v) for v in st["_rb"][c]),
        ))
    return out


def contrast(target: TargetModel, set_a: Iterable[str], set_b: Iterable[str], *, spec: ContrastSpec,
             names: tuple[str, str] = ("a", "b"), on_batch: Callable[[str, int], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> ContrastStudy:
    """Run a contrast study of ``set_a`` against ``set_b`` on ``target`` (not stored).

    Raises ConfigError for bad settings, ModelError for unknown layers, CorpusError for a side
    with fewer than two examples or an example without tokens."""
    spec.check()
    layers = check_layers(target, spec.layers if spec.layers is not None else range(target.n_layers))
    a, b, _ = stream_sets(target, set_a, set_b, layers=layers, spec=spec, names=names, on_batch=on_batch,
                          should_stop=should_stop)
    st = _stats(a, b, spec)
    neurons = rank_neurons(st, layers=layers, n_units=target.n_units, spec=spec)
    params = {k: getattr(spec, k) for k in ("alpha", "min_effect", "keep", "reservoir", "max_example_tokens",
                                             "batch_size", "seed")}
    if spec.test == "permutation":
        params["n_permutations"] = spec.n_permutations
    params["exact"] = a.n <= spec.reservoir and b.n <= spec.reservoir
    log.info("contrast %s on %s: %d of %d neurons kept", spec.name, target.name, len(neurons), len(st["p"]))
    return ContrastStudy(name=spec.name, model=target.name, set_a=_fingerprint(a), set_b=_fingerprint(b),
                         layers=tuple(layers), n_tested=int(len(st["p"])), score=spec.score, test=spec.test,
                         neurons=tuple(neurons), params=params)


def label_top(target: TargetModel, study: ContrastStudy, texts: Sequence[str], *, n: int,
              explainers: Sequence[str], database_url: str, model_spec: str) -> list[NeuronId]:
    """Record the top ``n`` neurons of ``study`` on ``texts`` (both sets; one pass for all their
    layers; neurons already recorded are kept as they are), then explain, score and store them
    with ``explainers`` (:func:`pipeline.run.run`). Returns the neurons labelled."""
    from neurolabel.activations.corpus import Corpus
    from neurolabel.activations.record import record_activations
    from neurolabel.pipeline.run import run
    from neurolabel.pipeline.spec import RunSpec
    from neurolabel.storage.db import session_scope, upgrade
    from neurolabel.storage.queries import recorded_neurons, save_neuron_records, upsert_model

    top = [c.neuron for c in study.neurons[:n]]
    if not top:
        return []
    upgrade(database_url)
    with session_scope(database_url) as session:
        have = set(recorded_neurons(session=session, model=study.model))
    missing = [x for x in top if x not in have]
    if missing:
        layers = sorted({x.layer for x in missing})
        units = sorted({x.index for x in missing})
        recording = record_activations(target, Corpus.from_texts(texts, name=f"{study.name}-sets"), layers=layers,
                                       units=units, window_tokens=16, top_k=10, n_random=10,
                                       max_tokens=max(16, 16 * (sum(len(t) for t in texts) // 16 + 1)),
                                       progress=False)
        wanted = set(missing)
        with session_scope(database_url) as session:
            upsert_model(session=session, name=target.name, architecture=target.architecture, source=target.source,
                         unit_map=target.unit_map, n_layers=target.n_layers, n_units=target.n_units)
            save_neuron_records(session=session, records=[r for r in recording.records() if r.neuron in wanted])
    for layer in sorted({x.layer for x in top}):
        run(RunSpec(model=model_spec, layers=(layer,), units=tuple(sorted(x.index for x in top if x.layer == layer)),
                    explainers=tuple(explainers)), database_url=database_url, progress=False)
    return top
