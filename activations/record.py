"""Streaming recording of MLP units over a corpus.

One forward pass per batch of windows; inside the unit hooks, everything is reduced at once in
torch, so memory is bounded by units x k whatever the corpus length:

- **top-k per split**: for each split (explain / score, :func:`core.split_of_window`) and unit a
  set of ``top_k`` slots holding the window max, window id and per-token activations. Per batch
  the per-window max ``[windows, units]`` is merged with the slots by ``torch.topk`` over the
  concatenation; only the (slot, unit) pairs that changed are copied, so the cost falls as the
  sets settle.
- **random windows**: a uniform reservoir sample (algorithm R, fixed seed) of window ids, the same
  windows for every unit, with their per-token activations.
- **quantile windows**: the reservoir windows (``max(n_random, 2 x bins x per_bin)`` of them)
  ranked per unit by their max activation, cut into ``n_quantile_bins`` equal-count bins
  (quantiles of the window-max distribution estimated on the uniform sample, as OpenAI's
  ``random_sample_by_quantile``); ``per_bin`` evenly spaced windows are kept per bin.
- **running statistics** over every token: count, mean and variance merged per batch (Chan et
  al., from per-batch sums in float64), max, min, fraction of activations > 0.

The hooks only reduce each layer into per-batch buffers (window max, min, sums, positive count;
one pass each over the ``[batch, tokens, units]`` tensor) and keep a reference to it; after the
forward pass one set of vectorised operations over all layers at once (``layers x units``
columns) merges the buffers into the state and copies the few changed windows. This bookkeeping
runs single-threaded by default (``bookkeeping_threads``): on the shared 2-core machine ATen's
parallel regions stalled on descheduled threads and made it ~10x slower.

Token strings are kept only for windows still referenced by a slot (garbage-collected
periodically).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

from activations.corpus import Corpus, Window, iter_windows, load_corpus
from activations.models import TargetModel, check_layers, check_units
from activations.units import model_inputs, run_forward, unit_hooks
from core.errors import CorpusError, ModelError
from core.types import ActivationRecord, NeuronId, NeuronRecord, NeuronStats, split_of_window

log = logging.getLogger(__name__)

_SPLITS = ("explain", "score")


@dataclass
class _State:
    """Mutable recording state (internal), all layers side by side in one column space.

    ``LU`` = recorded layers x units (column ``i*U + j`` = unit ``j`` of the ``i``-th recorded
    layer), ``k`` slots per split, ``T`` tokens per window, ``R`` reservoir slots."""

    top_vals: Any  # [2, LU, k] window max (-inf = empty slot)
    top_ids: Any  # [2, LU, k] window id (-1 = empty)
    top_acts: Any  # [2, LU * k, T] row = column * k + slot
    res_max: Any  # [R, LU]
    res_acts: Any  # [R, T, LU]
    mean: Any  # [LU] float64
    m2: Any  # [LU] float64
    vmax: Any  # [LU]
    vmin: Any  # [LU]
    active: Any  # [LU] int64
    count: int = 0

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (
            self.top_vals, self.top_ids, self.top_acts, self.res_max, self.res_acts,
            self.mean, self.m2, self.vmax, self.vmin, self.active))


@dataclass
class Recording:
    """The result of a recording run: compact tensors, turned into :class:`core.NeuronRecord`
    objects on demand by :meth:`records`."""

    model: str
    """Target model name."""
    layers: list[int]
    """Recorded layers (sorted)."""
    units: list[int]
    """Recorded unit indices (the same in every layer)."""
    n_windows: int
    """Windows streamed."""
    n_tokens: int
    """Tokens streamed (recorded positions; prefix tokens such as BOS not counted)."""
    window_tokens: int
    """Tokens per window."""
    top_k: int
    """Top windows kept per unit and split."""
    n_random: int
    """Random windows per unit (both splits)."""
    n_quantile_bins: int
    """Activation-quantile bins."""
    per_bin: int
    """Windows kept per quantile bin."""
    state: _State = field(repr=False, default=None)  # type: ignore[assignment]
    res_ids: list[int] = field(default_factory=list)
    """Window ids in the reservoir slots."""
    tokens: dict[int, tuple[str, ...]] = field(repr=False, default_factory=dict)
    """Token strings of the windows still referenced."""

    def state_bytes(self) -> int:
        """Bytes held by the state tensors (bounded by units x k, independent of corpus size)."""
        return self.state.nbytes()

    def records(self, layers: Sequence[int] | None = None) -> Iterator[NeuronRecord]:
        """One :class:`NeuronRecord` per recorded unit (layer by layer, unit by unit)."""
        for layer in layers if layers is not None else self.layers:
            if layer not in self.layers:
                raise ModelError(f"layer {layer} was not recorded; recorded: {self.layers}")
            yield from self._layer_records(layer)

    def _layer_records(self, layer: int) -> Iterator[NeuronRecord]:
        import torch

        st, k, U = self.state, self.top_k, len(self.units)
        i = self.layers.index(layer)
        cols = slice(i * U, (i + 1) * U)
        top_vals = st.top_vals[:, cols].cpu().permute(1, 0, 2).tolist()  # [U][S][k]
        top_ids = st.top_ids[:, cols].cpu().permute(1, 0, 2).tolist()
        T = st.top_acts.shape[-1]
        top_acts = st.top_acts.view(2, -1, k, T)[:, cols].cpu().permute(1, 0, 2, 3).contiguous()  # [U, S, k, T]
        r_fill = len(self.res_ids)
        res_acts_all = st.res_acts[:r_fill, :, cols].cpu().permute(2, 0, 1).contiguous()  # [U, R, T]
        res_max = st.res_max[:r_fill, cols].cpu().t().contiguous()  # [U, R]
        count = max(st.count, 1)
        std = torch.sqrt(torch.clamp(st.m2[cols] / count, min=0.0)).cpu().tolist()
        mean, vmax, vmin = st.mean[cols].cpu().tolist(), st.vmax[cols].cpu().tolist(), st.vmin[cols].cpu().tolist()
        frac = (st.active[cols].double() / count).cpu().tolist()
        for j, unit in enumerate(self.units):
            # top windows of both splits, highest first
            entries = [(top_vals[j][s][slot], s, slot) for s in range(2) for slot in range(k)
                       if top_vals[j][s][slot] != -math.inf]
            entries.sort(key=lambda e: (-e[0], top_ids[j][e[1]][e[2]]))
            unit_acts = top_acts[j].tolist()
            top = tuple(self._rec(top_ids[j][s][slot], unit_acts[s][slot], "top") for _, s, slot in entries)
            res_acts = res_acts_all[j].tolist()
            random_recs = tuple(
                self._rec(self.res_ids[r], res_acts[r], "random") for r in range(min(self.n_random, r_fill))
            )
            quant: list[ActivationRecord] = []
            if r_fill:
                order = torch.argsort(res_max[j], stable=True).tolist()
                for b, members in enumerate(_split_even(order, self.n_quantile_bins)):
                    for r in _evenly_spaced(members, self.per_bin):
                        quant.append(self._rec(self.res_ids[r], res_acts[r], "quantile", quantile=b))
            stats = NeuronStats(count=st.count, mean=mean[j], std=std[j], max=vmax[j], min=vmin[j],
                                frac_active=frac[j])
            yield NeuronRecord(model=self.model, neuron=NeuronId(layer, unit), top=top, random=random_recs,
                               quantile=tuple(quant), stats=stats)

    def _rec(self, wid: int, acts: list[float], kind: str, quantile: int | None = None) -> ActivationRecord:
        return ActivationRecord(
            tokens=self.tokens[wid],
            activations=tuple(acts),
            window_id=wid,
            split=split_of_window(wid),
            kind=kind,  # type: ignore[arg-type]
            quantile=quantile,
        )


def _split_even(items: list[int], n: int) -> list[list[int]]:
    """``items`` cut into ``n`` consecutive parts of (nearly) equal size."""
    out, start = [], 0
    for b in range(n):
        end = round((b + 1) * len(items) / n)
        out.append(items[start:end])
        start = end
    return out


def _evenly_spaced(items: list[int], k: int) -> list[int]:
    if len(items) <= k:
        return list(items)
    return [items[round((i + 0.5) * len(items) / k - 0.5)] for i in range(k)]


class _Recorder:
    """Holds the state during one run. The hooks reduce each layer into per-batch buffers
    (window max, min, sums, positive count), copy reservoir windows and keep a reference to the
    layer's tensor; after the forward pass one set of vectorised operations over all layers at
    once updates the state and copies the changed top windows out of the kept tensors."""

    def __init__(self, target: TargetModel, layers: list[int], units: list[int] | None, *, top_k: int,
                 n_reservoir: int, batch_size: int, seed: int, threads: int | None = 1) -> None:
        self.target = target
        self.layers = layers
        self.units = units
        self.top_k = top_k
        self.n_reservoir = n_reservoir
        self.batch_size = batch_size
        self.rng = random.Random(seed)
        self.col = {layer: i for i, layer in enumerate(layers)}
        self.U = len(units) if units is not None else target.n_units
        self.LU = self.U * len(layers)
        self.state: _State | None = None
        self.res_ids: list[int] = []
        self.tokens: dict[int, tuple[str, ...]] = {}
        self.n_seen = 0
        self._gc_at = 256
        self.threads = threads
        self._ut = None
        self._held: list[Any] = []
        self._res_updates: list[tuple[int, int]] = []

    def _allocate(self, T: int) -> None:
        import torch

        dev, k, R, LU, Bm = self.target.device, self.top_k, self.n_reservoir, self.LU, self.batch_size
        self.state = _State(
            top_vals=torch.full((2, LU, k), -math.inf, device=dev),
            top_ids=torch.full((2, LU, k), -1, dtype=torch.long, device=dev),
            top_acts=torch.empty((2, LU * k, T), device=dev),  # read only where a slot is filled
            res_max=torch.zeros((R, LU), device=dev),
            res_acts=torch.empty((R, T, LU), device=dev),
            mean=torch.zeros(LU, dtype=torch.float64, device=dev),
            m2=torch.zeros(LU, dtype=torch.float64, device=dev),
            vmax=torch.full((LU,), -math.inf, device=dev),
            vmin=torch.full((LU,), math.inf, device=dev),
            active=torch.zeros(LU, dtype=torch.long, device=dev),
        )
        # per-batch buffers, filled by the hooks
        self.b_wmax = torch.empty((Bm, LU), device=dev)
        self.b_min = torch.empty(LU, device=dev)
        self.b_sum = torch.empty(LU, dtype=torch.float64, device=dev)
        self.b_sumsq = torch.empty(LU, dtype=torch.float64, device=dev)
        self.b_active = torch.empty(LU, dtype=torch.long, device=dev)

    def on_layer(self, layer: int, acts: Any) -> None:
        """Hook callback: reduce one layer's ``[B, prefix+T, U]`` unit tensor into the batch
        buffers (per-window max, min, sums, positive count) and copy reservoir windows."""
        import torch

        with _threads(self.threads):
            p = len(self.target.prefix_ids)
            x = acts[:, p:, :] if p else acts
            if self.units is not None:
                if self._ut is None:
                    self._ut = torch.tensor(self.units, dtype=torch.long, device=x.device)
                x = x.index_select(-1, self._ut)
            x = x.float()
            B, i = x.shape[0], self.col[layer]
            cols = slice(i * self.U, (i + 1) * self.U)
            self.b_wmax[:B, cols] = x.amax(dim=1)
            self.b_min[cols] = x.amin(dim=1).amin(dim=0)
            self.b_sum[cols] = x.sum(dim=1).sum(dim=0, dtype=torch.float64)
            self.b_sumsq[cols] = (x * x).sum(dim=1).sum(dim=0, dtype=torch.float64)
            self.b_active[cols] = (x > 0).sum(dim=1, dtype=torch.int32).sum(dim=0)
            for slot, row in self._res_updates:
                self.state.res_acts[slot, :, cols] = x[row]
            self._held[i] = x

    def feed(self, batch: list[Window]) -> None:
        """Run one batch of equal-length windows through the model and update the state."""
        import torch

        if self.state is None:
            self._allocate(len(batch[0].token_ids))
        st, dev, k, U = self.state, self.target.device, self.top_k, self.U
        B, T = len(batch), len(batch[0].token_ids)
        # uniform reservoir of windows (algorithm R), shared by every unit; copied by the hooks
        self._res_updates = []
        for row, w in enumerate(batch):
            self.n_seen += 1
            if len(self.res_ids) < self.n_reservoir:
                slot = len(self.res_ids)
                self.res_ids.append(w.window_id)
            else:
                slot = self.rng.randrange(self.n_seen)
                if slot >= self.n_reservoir:
                    continue
                self.res_ids[slot] = w.window_id
            self._res_updates.append((slot, row))
        entered = {row for _, row in self._res_updates}
        self._held = [None] * len(self.layers)
        run_forward(self.target, model_inputs(self.target, [w.token_ids for w in batch]))
        with _threads(self.threads):
            # statistics: Chan et al. merge of the batch's mean and sum of squared deviations
            n_b = B * T
            tot = st.count + n_b
            mean_b = self.b_sum / n_b
            m2_b = torch.clamp(self.b_sumsq - self.b_sum * mean_b, min=0.0)
            delta = mean_b - st.mean
            st.mean += delta * (n_b / tot)
            st.m2 += m2_b + delta * delta * (st.count * n_b / tot)
            st.count = tot
            wmax = self.b_wmax[:B]
            torch.maximum(st.vmax, wmax.amax(dim=0), out=st.vmax)
            torch.minimum(st.vmin, self.b_min, out=st.vmin)
            st.active += self.b_active
            for slot, row in self._res_updates:
                st.res_max[slot] = wmax[row]
            # top-k per split
            for s, name in enumerate(("explain", "score")):
                rows = [r for r, w in enumerate(batch) if split_of_window(w.window_id) == name]
                if not rows:
                    continue
                rows_t = torch.tensor(rows, dtype=torch.long, device=dev)
                ids_t = torch.tensor([batch[r].window_id for r in rows], dtype=torch.long, device=dev)
                changed = _merge_topk(st.top_vals[s], st.top_ids[s], wmax.index_select(0, rows_t), ids_t)
                if changed is None:
                    continue
                col, slot, src = changed
                brow = rows_t[src]
                layer_of = torch.div(col, U, rounding_mode="floor")
                for i in torch.unique(layer_of).tolist():
                    sel = (layer_of == i).nonzero().squeeze(1)
                    vals = self._held[i][brow[sel], :, col[sel] - i * U]  # [P_i, T]
                    st.top_acts[s].index_copy_(0, col[sel] * k + slot[sel], vals)
                entered.update(torch.unique(brow).tolist())
        self._held = []
        for row in entered:
            self.tokens[batch[row].window_id] = batch[row].tokens
        if len(self.tokens) > self._gc_at:
            self._gc_tokens()

    def _gc_tokens(self) -> None:
        import torch

        keep = set(self.res_ids)
        if self.state is not None:
            keep.update(torch.unique(self.state.top_ids).tolist())
        self.tokens = {w: t for w, t in self.tokens.items() if w in keep}
        self._gc_at = max(256, 2 * len(self.tokens))


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Run the bookkeeping with ``n`` torch threads. On a busy machine ATen's parallel regions
    wait for descheduled threads: single-threaded reductions were ~10x faster there, and these
    memory-bound passes gain little from a second thread on an idle one."""
    import torch

    old = torch.get_num_threads()
    if n is None or n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _merge_topk(vals: Any, ids: Any, cand: Any, cand_ids: Any) -> tuple[Any, Any, Any] | None:
    """Merge candidates ``cand [C, LU]`` (window ids ``cand_ids [C]``) into the slot sets
    ``vals/ids [LU, k]`` in place. Returns the changed ``(column, slot, candidate row)`` index
    tensors, or None when nothing changed."""
    import torch

    k = vals.shape[1]
    _, idx = torch.topk(torch.cat([vals, cand.t()], 1), k, dim=1)  # [LU, k]
    is_new = idx >= k
    n_new = is_new.sum(1)
    cols = n_new.nonzero().squeeze(1)
    if cols.numel() == 0:
        return None
    idx, is_new, n_new = idx[cols], is_new[cols], n_new[cols]
    kept = torch.zeros((cols.numel(), k + cand.shape[0]), dtype=torch.bool, device=vals.device)
    kept.scatter_(1, idx, True)
    ev_slots = torch.argsort(kept[:, :k].to(torch.int8), dim=1, stable=True)  # evicted slots first
    new_first = torch.gather(idx, 1, torch.argsort((~is_new).to(torch.int8), dim=1, stable=True))
    rank = torch.arange(k, device=vals.device).unsqueeze(0)
    c, r = (rank < n_new.unsqueeze(1)).nonzero(as_tuple=True)
    col = cols[c]
    slot = ev_slots[c, r]
    src = new_first[c, r] - k
    vals[col, slot] = cand[src, col]
    ids[col, slot] = cand_ids[src]
    return col, slot, src


def _batched(windows: Iterable[Window], batch_size: int) -> Iterator[list[Window]]:
    batch: list[Window] = []
    for w in windows:
        if batch and len(w.token_ids) != len(batch[0].token_ids):
            yield batch
            batch = []
        batch.append(w)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def record_activations(
    target: TargetModel,
    corpus: Corpus | Iterable[str] | str,
    *,
    layers: Sequence[int],
    units: Sequence[int] | None = None,
    max_tokens: int = 100_000,
    top_k: int = 40,
    n_random: int = 20,
    n_quantile_bins: int = 5,
    per_bin: int = 2,
    window_tokens: int = 64,
    batch_size: int = 16,
    progress: bool = True,
    seed: int = 0,
    windows: Iterable[Window] | None = None,
    bookkeeping_threads: int | None = 1,
) -> Recording:
    """Stream the corpus (or the given ``windows``) through the model once and keep, per unit,
    the top windows, random and quantile windows and running statistics (see the module
    docstring). Returns a compact :class:`Recording`; its :meth:`Recording.records` builds the
    :class:`core.NeuronRecord` objects (layer by layer, so callers can store them in chunks).

    ``seed`` fixes the reservoir sample; ``bookkeeping_threads`` is the torch thread count of
    the bookkeeping (None = leave as is); the forward pass keeps the process setting.

    Raises ModelError for unknown layers/units and CorpusError for an empty corpus.
    """
    import torch
    from tqdm.auto import tqdm

    layers = check_layers(target, layers)
    unit_list = check_units(target, units)
    for name, value, low in (("top_k", top_k, 1), ("n_random", n_random, 0), ("n_quantile_bins", n_quantile_bins, 1),
                             ("per_bin", per_bin, 0), ("window_tokens", window_tokens, 1), ("batch_size", batch_size, 1)):
        if value < low:
            raise ModelError(f"{name} must be >= {low}, got {value}")
    if max_tokens < window_tokens:
        raise CorpusError(f"max_tokens ({max_tokens}) is smaller than one window ({window_tokens} tokens)")
    max_windows = max_tokens // window_tokens
    if windows is None:
        if isinstance(corpus, str):
            corpus = load_corpus(corpus)
        windows = iter_windows(target.tokenizer, corpus, window_tokens=window_tokens, max_windows=max_windows)
    n_reservoir = max(n_random, 2 * n_quantile_bins * per_bin, 1)
    rec = _Recorder(target, layers, unit_list, top_k=top_k, n_reservoir=n_reservoir,
                    batch_size=batch_size, seed=seed, threads=bookkeeping_threads)
    bar = tqdm(total=max_windows, unit="win", desc=f"record {target.name}", disable=not progress)
    n_windows = n_tokens = 0
    with torch.inference_mode(), unit_hooks(target, layers, rec.on_layer):
        for batch in _batched(windows, batch_size):
            rec.feed(batch)
            n_windows += len(batch)
            n_tokens += sum(len(w.token_ids) for w in batch)
            bar.update(len(batch))
    bar.close()
    if n_windows == 0:
        raise CorpusError(f"corpus {getattr(corpus, 'name', corpus)!r} is empty: no windows")
    rec._gc_tokens()
    return Recording(
        model=target.name,
        layers=layers,
        units=unit_list if unit_list is not None else list(range(target.n_units)),
        n_windows=n_windows,
        n_tokens=n_tokens,
        window_tokens=window_tokens,
        top_k=top_k,
        n_random=n_random,
        n_quantile_bins=n_quantile_bins,
        per_bin=per_bin,
        state=rec.state,
        res_ids=list(rec.res_ids),
        tokens=rec.tokens,
    )


def record_neurons(
    target: TargetModel,
    corpus: Corpus | Iterable[str] | str,
    *,
    layers: Sequence[int],
    units: Sequence[int] | None = None,
    max_tokens: int = 100_000,
    top_k: int = 40,
    n_random: int = 20,
    n_quantile_bins: int = 5,
    per_bin: int = 2,
    window_tokens: int = 64,
    batch_size: int = 16,
    progress: bool = True,
) -> list[NeuronRecord]:
    """Record the units of ``layers`` (all units, or ``units`` in each layer) over at most
    ``max_tokens`` tokens of ``corpus``; one :class:`NeuronRecord` per unit. ``top_k`` is per
    split: the explain and the score split each keep up to ``top_k`` top windows."""
    recording = record_activations(
        target, corpus, layers=layers, units=units, max_tokens=max_tokens, top_k=top_k,
        n_random=n_random, n_quantile_bins=n_quantile_bins, per_bin=per_bin,
        window_tokens=window_tokens, batch_size=batch_size, progress=progress,
    )
    return list(recording.records())
