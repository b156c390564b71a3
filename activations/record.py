"""Streaming recording of MLP units over a corpus.

One forward pass per batch of windows; inside the unit hooks, everything is reduced at once in
torch, so memory is bounded by units x k whatever the corpus length:

- **top-k per split**: for each split (explain / score, :func:`core.split_of_window`) and unit a
  set of ``top_k`` slots holding the window max, window id and per-token activations. The first
  ``top_k`` windows of a split fill the slots of every unit directly; after that, per batch,
  only the units where some window's max beats the unit's current k-th best are merged
  (:func:`_merge_topk`) and only the (unit, slot) pairs that changed are copied, so the cost
  falls as the sets settle.
- **random windows**: a uniform sample without replacement of window ids, the same windows for
  every unit, with their per-token activations: each window gets a priority that is a hash of
  ``(seed, window id)`` (:func:`window_priority`, not a draw from a sequential RNG) and the
  reservoir keeps the ``R`` windows of lowest priority (bottom-k sampling). A window's priority
  does not depend on which windows came before it or on which process saw it, so a recording
  sharded over corpus slices keeps exactly the windows an unsharded one keeps
  (:func:`activations.merge.merge_recordings`).
- **quantile windows**: the reservoir windows (``max(n_random, 2 x bins x per_bin)`` of them)
  ranked per unit by their max activation, cut into ``n_quantile_bins`` equal-count bins
  (quantiles of the window-max distribution estimated on the uniform sample, as OpenAI's
  ``random_sample_by_quantile``); ``per_bin`` evenly spaced windows are kept per bin.
- **running statistics** over every token: count, mean and variance merged per batch (Chan et
  al., from per-batch sums in float64), max, min, fraction of activations > 0.
- **per-token-type sums of the explain split** (:class:`core.TokenStats`): for every tracked
  token type, its count and the sum of each unit's activations over explain-split tokens (one
  ``index_add_`` per layer and batch). Memory is ``tracked types x units x 4`` bytes: all of the
  vocabulary when it fits in ``token_stats_mb``, else the ``token_stats_mb / (units x 4)`` lowest
  token ids (byte-level BPE numbers its merges in the order they were learnt, so low ids are the
  frequent types); the types outside count towards the unit's overall mean only. Each record
  keeps the ``token_stats_top`` types that explain most of its variance.

Each layer's hook does that layer's whole share while its ``[batch, tokens, units]`` tensor is
at hand: the statistics reductions into per-batch buffers (one pass each), the reservoir copies
and the top-k update of its columns (``layers x units`` columns side by side in one state).
After the forward pass the statistics buffers are merged for all layers at once. The
bookkeeping uses the process's torch threads unless ``bookkeeping_threads`` says otherwise,
except the per-type sums (``index_add_``, one thread: see :meth:`_Recorder.on_layer`). On a
heavily shared machine, 1 avoids ATen's parallel regions stalling on descheduled threads: per
layer and batch of 32 x 64 tokens on this 2-core machine, ``amax`` / ``amin`` / the sums took
5-30 ms on two threads with other work running vs 1.2-2.3 ms on one; idle, two threads were
~1.7x faster than one (0.7-1.0 ms). None of these results depends on the thread count (max /
min, copies and exact counts in any order; each float sum has many outputs, which torch splits
between threads, never one output's sum: ``tests/activations/test_record_exact.py`` records
with 1 and 2 threads against the same reference). ``bench/capture.py`` measures the cost
against the bare forward passes, ``bench/record_pass.py`` the whole-model pass against another
tree.

Ties are broken by window id everywhere: a top-k set is the ``k`` first windows in the order
(window max descending, window id ascending), and the reservoir the ``R`` first in (priority,
window id) order, so the sets do not depend on batch boundaries or on how the corpus was
sharded.

Token strings are kept only for windows still referenced by a slot (garbage-collected
periodically).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

from neurolabel.activations.corpus import Corpus, Window, iter_windows, load_corpus
from neurolabel.activations.models import TargetModel, check_layers, check_units
from neurolabel.activations.units import model_inputs, run_forward, unit_hooks
from neurolabel.core.errors import CorpusError, ModelError
from neurolabel.core.types import (
    ActivationRecord,
    NeuronId,
    NeuronRecord,
    NeuronStats,
    TokenStat,
    TokenStats,
    split_of_window,
)

log = logging.getLogger(__name__)

_SPLITS = ("explain", "score")
_TINY = 2.0**-100
_INV_TINY = 2.0**100


@dataclass
class _State:
    """Mutable recording state (internal), all layers side by side in one column space.

    ``LU`` = recorded layers x units (column ``i*U + j`` = unit ``j`` of the ``i``-th recorded
    layer), ``k`` slots per split, ``T`` tokens per window, ``R`` reservoir slots."""

    top_vals: Any  # [2, LU, k] window max (-inf = empty slot)
    top_ids: Any  # [2, LU, k] window id (-1 = empty)
    top_acts: Any  # [2, LU, k, T] per split: column, slot, token
    res_max: Any  # [R, LU]
    res_acts: Any  # [R, T, LU]
    mean: Any  # [LU] float64
    m2: Any  # [LU] float64
    vmax: Any  # [LU]
    vmin: Any  # [LU]
    active: Any  # [LU] int64
    count: int = 0
    tok_sum: Any = None  # [L, n + 1, U] explain-split activation sums per token type (row 0: untracked types)
    tok_count: Any = None  # [n + 1] explain-split occurrences per token type
    tok_types: Any = None  # [n + 1] the token id of each row (row 0: -1): tracked types in the order first seen
    tracked_types: int = 0  # V: token ids below this are tracked (the rest share row 0)

    def nbytes(self) -> int:
        """Bytes held (the per-type sums with their spare rows: views of what was allocated)."""
        return sum(t.untyped_storage().nbytes() for t in (
            self.top_vals, self.top_ids, self.top_acts, self.res_max, self.res_acts,
            self.mean, self.m2, self.vmax, self.vmin, self.active, self.tok_sum, self.tok_count, self.tok_types)
            if t is not None)


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
    """Window ids in the reservoir slots, lowest priority first (:func:`window_priority`)."""
    seed: int = 0
    """Seed of the reservoir priorities."""
    tokens: dict[int, tuple[str, ...]] = field(repr=False, default_factory=dict)
    """Token strings of the windows still referenced."""
    prefix: tuple[str, ...] = ()
    """Tokens fed before every window (not recorded), e.g. ``("<|im_start|>",)``."""
    token_stats_top: int = 128
    """Token types kept per unit in :class:`core.TokenStats` (0: none)."""
    decode: Any = field(repr=False, default=None)
    """Token id -> string (as the windows' tokens are decoded), for the token statistics."""

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
        top_acts = st.top_acts[:, cols].cpu().permute(1, 0, 2, 3).contiguous()  # [U, S, k, T]
        r_fill = len(self.res_ids)
        res_acts_all = st.res_acts[:r_fill, :, cols].cpu().permute(2, 0, 1).contiguous()  # [U, R, T]
        res_max = st.res_max[:r_fill, cols].cpu().t().contiguous()  # [U, R]
        count = max(st.count, 1)
        std = torch.sqrt(torch.clamp(st.m2[cols] / count, min=0.0)).cpu().tolist()
        mean, vmax, vmin = st.mean[cols].cpu().tolist(), st.vmax[cols].cpu().tolist(), st.vmin[cols].cpu().tolist()
        frac = (st.active[cols].double() / count).cpu().tolist()
        token_stats = self._token_stats(i)
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
                               quantile=tuple(quant), stats=stats,
                               token_stats=token_stats[j] if token_stats else None, prefix=self.prefix)

    def _token_stats(self, i: int) -> list[TokenStats] | None:
        """Per unit of the ``i``-th recorded layer: the token types with the largest
        ``count x (mean - overall mean)^2`` over the explain split."""
        import torch

        st = self.state
        if st.tok_sum is None or self.token_stats_top <= 0:
            return None
        counts = st.tok_count.double().cpu()  # [n + 1]
        total = float(counts.sum())
        if total == 0:
            return None
        V = st.tracked_types
        type_of = st.tok_types.cpu().tolist()  # row -> token id
        # the tracked types' rows in token-id order, then the untracked types' row: the order of a table
        # indexed by token id, so that ties between types fall alike however the rows were filled
        by_id = torch.tensor(sorted(range(1, len(type_of)), key=type_of.__getitem__) + [0], dtype=torch.long)
        sums = st.tok_sum[i].index_select(0, by_id.to(st.tok_sum.device)).double().cpu()  # [n + 1, U]
        counts = counts[by_id]
        type_of = [type_of[r] for r in by_id.tolist()]
        n = counts.shape[0] - 1
        overall = sums.sum(0) / total  # [U]
        seen = counts[:n] > 0
        ids_seen = seen.nonzero().squeeze(1)  # rows (of the id-ordered table)
        c = counts[ids_seen][:, None]
        means = sums[ids_seen] / c  # [n_seen, U]
        weight = c * (means - overall) ** 2
        k = min(self.token_stats_top, int(ids_seen.numel()))
        top = torch.topk(weight, k, dim=0).indices if k else torch.zeros((0, sums.shape[1]), dtype=torch.long)
        # Python values read out once (indexing a tensor element by element took ~40 % of building a
        # layer's records): per unit its top rows, their counts and means
        seen_ids = [type_of[r] for r in ids_seen.tolist()]  # seen row -> token id
        cnt = c.squeeze(1).long().tolist()
        top_t = top.t()  # [U, k]
        top_rows = top_t.tolist()
        top_means = means.t().gather(1, top_t).tolist() if k else [[] for _ in range(sums.shape[1])]
        overall_l = overall.tolist()
        need = sorted({seen_ids[r] for r in top.flatten().tolist()})
        names = dict(zip(need, self.decode(need))) if need else {}
        out = []
        count = int(total)
        for j, rows in enumerate(top_rows):
            out.append(TokenStats(
                count=count, mean=overall_l[j], tracked_types=V,
                tokens=tuple(TokenStat(names[seen_ids[r]], cnt[r], m) for r, m in zip(rows, top_means[j])),
            ))
        return out

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
    """Holds the state during one run. Each layer's hook does all of that layer's work while its
    ``[batch, tokens, units]`` tensor is at hand: the statistics reductions into per-batch
    buffers, the reservoir copies, and the top-k update of both splits (filling empty slots
    directly; afterwards merging only the units where some window beats the unit's current
    k-th best, so the cost falls as the sets settle). After the forward pass the statistics are
    merged for all layers at once."""

    def __init__(self, target: TargetModel, layers: list[int], units: list[int] | None, *, top_k: int,
                 n_reservoir: int, batch_size: int, seed: int, threads: int | None = None,
                 token_types: int = 0) -> None:
        self.target = target
        self.layers = layers
        self.units = units
        self.top_k = top_k
        self.n_reservoir = n_reservoir
        self.batch_size = batch_size
        self.seed = seed
        self.col = {layer: i for i, layer in enumerate(layers)}
        self.U = len(units) if units is not None else target.n_units
        self.LU = self.U * len(layers)
        self.state: _State | None = None
        self.res_ids: list[int] = []
        self.res_pri: list[int] = []  # priority of each reservoir slot's window
        self.tokens: dict[int, tuple[str, ...]] = {}
        self._gc_at = 256
        self.threads = threads
        self._ut = None
        self._filled = [0, 0]  # filled top-k slots per split (the same for every unit)
        self._plan: list[dict[str, Any]] = []
        self._entered: list[Any] = []
        self._res_updates: list[tuple[int, int]] = []
        self.token_types = token_types
        """Token ids below this are tracked by the per-type sums (0: no token statistics)."""
        self._types: list[int] = []
        """The token id of each row of the per-type sums after row 0, in the order first seen."""
        self._row_of: Any = None
        self._tok_rows: Any = None
        self._tok_ids: Any = None

    def _allocate(self, T: int) -> None:
        import torch

        dev, k, R, LU, Bm = self.target.device, self.top_k, self.n_reservoir, self.LU, self.batch_size
        self.state = _State(
            top_vals=torch.full((2, LU, k), -math.inf, device=dev),
            top_ids=torch.full((2, LU, k), -1, dtype=torch.long, device=dev),
            top_acts=torch.empty((2, LU, k, T), device=dev),  # read only where a slot is filled
            res_max=torch.zeros((R, LU), device=dev),
            res_acts=torch.empty((R, T, LU), device=dev),
            mean=torch.zeros(LU, dtype=torch.float64, device=dev),
            m2=torch.zeros(LU, dtype=torch.float64, device=dev),
            vmax=torch.full((LU,), -math.inf, device=dev),
            vmin=torch.full((LU,), math.inf, device=dev),
            active=torch.zeros(LU, dtype=torch.long, device=dev),
        )
        if self.token_types:
            # a row per tracked type once the explain split shows it (rows grow as types appear: a
            # 100,000-token corpus holds ~1/5 of SmolLM2's vocabulary), row 0 for the untracked ones
            V = self.token_types
            rows = min(V + 1, TOKEN_ROWS_FIRST)
            self.state.tok_sum = torch.zeros((len(self.layers), rows, self.U), device=dev)
            self.state.tok_count = torch.zeros(rows, dtype=torch.long, device=dev)
            self.state.tracked_types = V
            self._row_of = torch.full((V + 1,), -1, dtype=torch.long, device=dev)  # token id (clamped to V) -> row
            self._row_of[V] = 0
        # the k-th best window max per split and column (-inf until the slots are full)
        self.thresh = torch.full((2, LU), -math.inf, device=dev)
        # per-batch buffers, filled by the hooks
        self.b_wmax = torch.empty((Bm, LU), device=dev)
        self.b_min = torch.empty(LU, device=dev)
        self.b_sum = torch.empty(LU, dtype=torch.float64, device=dev)
        self.b_sumsq = torch.empty(LU, dtype=torch.float64, device=dev)
        self.b_active = torch.empty(LU, dtype=torch.long, device=dev)
        self.b_clamp = torch.empty((Bm, T, self.U), device=dev)  # x clamped to [0, 2^-100], reused

    def _make_plan(self, batch: list[Window]) -> None:
        """Per split, which rows of the batch fill empty slots (and which slots) and which rows
        compete for the full slots; decided before the forward pass, used by every hook."""
        import torch

        dev, k = self.target.device, self.top_k
        self._plan = []
        for s, name in enumerate(_SPLITS):
            rows = [r for r, w in enumerate(batch) if split_of_window(w.window_id) == name]
            f = self._filled[s]
            m = min(len(rows), k - f)
            fill, rest = rows[:m], rows[m:]
            self._plan.append({
                "first": f,
                "fill": fill,
                "fill_t": torch.tensor(fill, dtype=torch.long, device=dev),
                "fill_ids": torch.tensor([batch[r].window_id for r in fill], dtype=torch.long, device=dev),
                "full_after": f + m == k,
                "rest_t": torch.tensor(rest, dtype=torch.long, device=dev) if rest else None,
                "rest_ids": torch.tensor([batch[r].window_id for r in rest], dtype=torch.long, device=dev),
            })
            self._filled[s] = f + m

    def on_layer(self, layer: int, acts: Any) -> None:
        """Hook callback: one layer's ``[B, prefix+T, U]`` unit tensor -> statistics buffers,
        reservoir copies and the top-k slots of its columns."""
        import torch

        with _threads(self.threads):
            st = self.state
            p = len(self.target.prefix_ids)
            x = acts[:, p:, :] if p else acts
            if self.units is not None:
                if self._ut is None:
                    self._ut = torch.tensor(self.units, dtype=torch.long, device=x.device)
                x = x.index_select(-1, self._ut)
            x = x.float()
            B, i, U = x.shape[0], self.col[layer], self.U
            c0 = i * U
            cols = slice(c0, c0 + U)
            wmax = x.amax(dim=1)  # [B, U]
            self.b_wmax[:B, cols] = wmax
            self.b_min[cols] = x.amin(dim=1).amin(dim=0)  # (one amin over (0, 1) was ~20x slower)
            self.b_sum[cols] = x.sum(dim=1).sum(dim=0, dtype=torch.float64)
            self.b_sumsq[cols] = torch.linalg.vecdot(x, x, dim=1).sum(dim=0, dtype=torch.float64)  # no x*x temp
            # x > 0 counted as a float sum of x clamped to [0, 2^-100]: every positive activation
            # adds exactly 2^-100 (exact up to 2^24 per batch, in any order; ~3x faster than summing
            # a bool tensor), clamped into a buffer kept between batches, summed in one reduction.
            # Positives below 2^-100 (~8e-31) would add less and are rounded away.
            clamped = torch.clamp(x, min=0.0, max=_TINY, out=self.b_clamp[:B])
            self.b_active[cols] = torch.round(clamped.sum(dim=(0, 1)) * _INV_TINY).long()
            for slot, row in self._res_updates:
                st.res_acts[slot, :, cols] = x[row]
            if self._tok_rows is not None:
                # row by row (each x[r] is contiguous), on one thread: the same adds in the same
                # order as one index_add_ over the gathered rows (it adds in index order), without
                # the gathered copy; ~1 ms per layer and batch where two threads took 2-6 ms idle
                # (its per-index parallel regions) and 450 ms with the machine loaded
                T = x.shape[1]
                with _threads(1):
                    for j, r in enumerate(self._tok_rows):
                        st.tok_sum[i].index_add_(0, self._tok_ids[j * T:(j + 1) * T], x[r])
            for s, plan in enumerate(self._plan):
                vals, ids, top_acts = st.top_vals[s], st.top_ids[s], st.top_acts[s]
                if plan["fill"]:
                    f, m = plan["first"], len(plan["fill"])
                    vals[cols, f:f + m] = wmax.index_select(0, plan["fill_t"]).t()
                    ids[cols, f:f + m] = plan["fill_ids"]
                    for j, row in enumerate(plan["fill"]):
                        top_acts[cols, f + j] = x[row].t()
                    if plan["full_after"]:
                        self.thresh[s, cols] = vals[cols].amin(dim=1)
                if plan["rest_t"] is None:
                    continue
                cand = wmax.index_select(0, plan["rest_t"])  # [C, U]
                above = cand > self.thresh[s, cols]
                n_above = above.sum(dim=0, dtype=torch.int32)
                hit = n_above.nonzero().squeeze(1)
                if hit.numel() == 0:
                    continue
                g = hit + c0
                v, d = vals.index_select(0, g), ids.index_select(0, g)
                # at most max(n_above) windows can enter a column: only that many lowest slots matter
                changed = _merge_topk(v, d, cand.index_select(1, hit), plan["rest_ids"],
                                      max_new=int(n_above.max()))
                if changed is None:
                    continue
                vals.index_copy_(0, g, v)
                ids.index_copy_(0, g, d)
                self.thresh[s].index_copy_(0, g, v.amin(dim=1))
                col, slot, src = changed
                brow = plan["rest_t"][src]
                top_acts.view(-1, top_acts.shape[-1]).index_copy_(0, g[col] * self.top_k + slot,
                                                                  x[brow, :, hit[col]])  # [P, T] rows
                self._entered.append(brow)

    def _token_rows(self, ids: Any) -> Any:
        """The rows of the per-type sums of ``ids`` (token ids clamped to V), types not seen before
        given the next rows (in id order), the sums grown when their rows run out."""
        import torch

        rows = self._row_of[ids]
        fresh = rows < 0
        if bool(fresh.any()):
            new = torch.unique(ids[fresh])  # sorted
            first = len(self._types) + 1
            need = first + new.numel()
            st = self.state
            have = st.tok_count.shape[0]
            if need > have:  # double (at most V + 1 rows): copies amortised over the stream
                grown = min(self.token_types + 1, max(need, 2 * have))
                tok_sum = torch.zeros((st.tok_sum.shape[0], grown, st.tok_sum.shape[2]), device=st.tok_sum.device)
                tok_sum[:, :have] = st.tok_sum
                tok_count = torch.zeros(grown, dtype=torch.long, device=st.tok_count.device)
                tok_count[:have] = st.tok_count
                st.tok_sum, st.tok_count = tok_sum, tok_count
            self._row_of[new] = torch.arange(first, need, dtype=torch.long, device=ids.device)
            self._types.extend(new.tolist())
            rows = self._row_of[ids]
        return rows

    def feed(self, batch: list[Window]) -> None:
        """Run one batch of equal-length windows through the model and update the state."""
        import torch

        if self.state is None:
            self._allocate(len(batch[0].token_ids))
        st = self.state
        B, T = len(batch), len(batch[0].token_ids)
        # uniform reservoir of windows (lowest hash priorities), shared by every unit; copied by the hooks
        self._res_updates = []
        for row, w in enumerate(batch):
            key = (window_priority(self.seed, w.window_id), w.window_id)
            if len(self.res_ids) < self.n_reservoir:
                slot = len(self.res_ids)
                self.res_ids.append(w.window_id)
                self.res_pri.append(key[0])
            else:
                slot = max(range(self.n_reservoir), key=lambda r: (self.res_pri[r], self.res_ids[r]))
                if key >= (self.res_pri[slot], self.res_ids[slot]):
                    continue
                self.res_ids[slot] = w.window_id
                self.res_pri[slot] = key[0]
            self._res_updates.append((slot, row))
        self._make_plan(batch)
        self._tok_rows = self._tok_ids = None
        if self.token_types:
            rows = [r for r, w in enumerate(batch) if split_of_window(w.window_id) == "explain"]
            if rows:
                dev = self.target.device
                self._tok_rows = rows
                ids = torch.tensor([batch[r].token_ids for r in rows], dtype=torch.long, device=dev).flatten()
                self._tok_ids = self._token_rows(ids.clamp(max=self.token_types))  # untracked types: row 0
                with _threads(1):
                    st.tok_count.index_add_(0, self._tok_ids, torch.ones_like(self._tok_ids))
        self._entered = []
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
            entered = {row for _, row in self._res_updates}
            for plan in self._plan:
                entered.update(plan["fill"])
            if self._entered:
                entered.update(torch.unique(torch.cat(self._entered)).tolist())
        self._entered = []
        for row in entered:
            self.tokens[batch[row].window_id] = batch[row].tokens
        if len(self.tokens) > self._gc_at:
            self._gc_tokens()

    def recording(self, *, n_windows: int, n_tokens: int, window_tokens: int, n_random: int,
                  n_quantile_bins: int, per_bin: int, token_stats_top: int = 0) -> Recording:
        """The :class:`Recording` of what was fed so far (reservoir slots in priority order)."""
        self._gc_tokens()
        self._sort_reservoir()
        st = self.state
        if st is not None and st.tok_sum is not None:
            import torch

            n = len(self._types) + 1  # the rows in use (views: the spare rows stay allocated until it is freed)
            st.tok_sum, st.tok_count = st.tok_sum[:, :n], st.tok_count[:n]
            st.tok_types = torch.tensor([-1, *self._types], dtype=torch.long, device=st.tok_count.device)
        return Recording(
            model=self.target.name,
            layers=self.layers,
            units=self.units if self.units is not None else list(range(self.target.n_units)),
            n_windows=n_windows,
            n_tokens=n_tokens,
            window_tokens=window_tokens,
            top_k=self.top_k,
            n_random=n_random,
            n_quantile_bins=n_quantile_bins,
            per_bin=per_bin,
            state=self.state,
            res_ids=list(self.res_ids),
            seed=self.seed,
            tokens=self.tokens,
            prefix=tuple(self.target.tokenizer.convert_ids_to_tokens(list(self.target.prefix_ids))),
            token_stats_top=token_stats_top if self.token_types else 0,
            decode=_decoder(self.target.tokenizer),
        )

    def _sort_reservoir(self) -> None:
        """Put the reservoir slots in (priority, window id) order, their tensors with them."""
        import torch

        order = sorted(range(len(self.res_ids)), key=lambda r: (self.res_pri[r], self.res_ids[r]))
        if self.state is None or order == list(range(len(order))):
            return
        self.res_ids = [self.res_ids[r] for r in order]
        self.res_pri = [self.res_pri[r] for r in order]
        idx = torch.tensor(order, dtype=torch.long, device=self.state.res_max.device)
        st, n = self.state, len(order)
        with torch.inference_mode():  # the state was made in inference mode
            st.res_max[:n] = st.res_max[:n].index_select(0, idx)
            _permute_rows_(st.res_acts, order)

    def _gc_tokens(self) -> None:
        import torch

        keep = set(self.res_ids)
        if self.state is not None:
            # the window ids in the top-k slots (-1 = empty): a bincount over ids + 1 instead of
            # torch.unique's sort of the ~1.8M slots of the whole model (~90 -> ~12 ms)
            seen = torch.bincount(self.state.top_ids.flatten() + 1)
            keep.update((seen.nonzero().squeeze(1) - 1).tolist())
        self.tokens = {w: t for w, t in self.tokens.items() if w in keep}
        self._gc_at = max(256, 2 * len(self.tokens))


def _permute_rows_(t: Any, order: list[int]) -> None:
    """``t[:n] = t[order]`` in place (``n = len(order)``), cycle by cycle through one row buffer.

    The reservoir's ``[R, T, LU]`` activations are ~470 MB for the whole default model: gathering
    them into a new tensor (as ``index_select`` + ``cat`` did) wrote ~940 MB of fresh pages, ~1 s
    at the end of every whole-model pass on this machine (loaded); this copies each moved row once
    into memory already mapped."""
    buf = None
    done = [False] * len(order)
    for start in range(len(order)):
        if done[start] or order[start] == start:
            done[start] = True
            continue
        if buf is None:
            buf = t[start].clone()
        else:
            buf.copy_(t[start])
        j = start
        while order[j] != start:
            t[j].copy_(t[order[j]])
            done[j] = True
            j = order[j]
        t[j].copy_(buf)
        done[j] = True


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


def _merge_topk(vals: Any, ids: Any, cand: Any, cand_ids: Any, *, max_new: int | None = None
                ) -> tuple[Any, Any, Any] | None:
    """Merge candidates ``cand [C, n]`` (window ids ``cand_ids [C]``) into the full slot sets
    ``vals/ids [n, k]`` in place. Returns the changed ``(column, slot, candidate row)`` index
    tensors, or None when nothing changed. ``max_new`` (optional) bounds how many candidates can
    enter any one column (those above its current k-th best).

    Per column the candidates sorted high to low are paired with the ``c = min(C, k, max_new)``
    lowest slots sorted low to high; the j-th candidate replaces the j-th lowest slot while it is
    strictly greater (the pairs that pass form a prefix, so this is exactly the top-k of the
    union). Ties go to the lower window id, as everywhere in the recorder: the candidates (in
    ascending id order, newer than every slot) are sorted stably, and among equal lowest slots
    the one with the highest id is replaced first. Cheaper than a top-k over the concatenation: a
    sort of C values and a smallest-c selection per column (a plain min when c = 1)."""
    import torch

    c = min(cand.shape[0], vals.shape[1], max_new if max_new is not None else cand.shape[0])
    if c < 1:
        return None
    if c == 1:
        cv, ci = cand.max(dim=0)  # [n] (the first, lowest-id candidate among equal maxima)
        ov = vals.min(dim=1).values
        oi = torch.where(vals == ov[:, None], ids, -2).argmax(dim=1)  # the newest of the lowest slots
        col = (cv > ov).nonzero().squeeze(1)
        if col.numel() == 0:
            return None
        slot, src = oi[col], ci[col]
        vals[col, slot] = cv[col]
        ids[col, slot] = cand_ids[src]
        return col, slot, src
    cv, ci = torch.sort(cand.t(), dim=1, descending=True, stable=True)  # [n, C]
    ov, oi = _lowest_slots(vals, ids, c)  # [n, c]
    col, j = (cv[:, :c] > ov).nonzero(as_tuple=True)
    if col.numel() == 0:
        return None
    slot, src = oi[col, j], ci[col, j]
    vals[col, slot] = cv[col, j]
    ids[col, slot] = cand_ids[src]
    return col, slot, src


def _lowest_slots(vals: Any, ids: Any, c: int) -> tuple[Any, Any]:
    """Per row the ``c`` lowest slots in (value ascending, id descending) order: their values
    and slot indices."""
    import torch

    by_id = torch.argsort(ids, dim=1, descending=True)
    ov, pos = torch.sort(vals.gather(1, by_id), dim=1, stable=True)
    return ov[:, :c], by_id.gather(1, pos[:, :c])


def window_priority(seed: int, window_id: int) -> int:
    """The reservoir priority of a window: a 64-bit hash of ``(seed, window id)``. The reservoir
    keeps the windows of lowest priority, a uniform sample that any process computes alike."""
    digest = hashlib.blake2b(f"{seed}:{window_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _decoder(tokenizer: Any) -> Any:
    """Token ids -> strings, each decoded on its own (as :func:`activations.corpus.iter_windows` does)."""
    return lambda ids: tokenizer.batch_decode([[i] for i in ids])


TOKEN_ROWS_FIRST = 4096
"""Rows the per-type sums start with (they double as the explain split shows more types)."""


def explain_token_types(windows: Iterable[Window], tracked: int) -> list[int]:
    """The token ids below ``tracked`` that the explain-split windows hold, sorted (the per-type sums
    keep a row for each: :func:`layer_state_bytes` plans with their number)."""
    seen: set[int] = set()
    for w in windows:
        if split_of_window(w.window_id) == "explain":
            seen.update(w.token_ids)
    return sorted(t for t in seen if t < tracked)


def token_types_tracked(vocab_size: int, n_columns: int, budget_mb: float) -> int:
    """How many token types the per-type sums track for ``n_columns`` recorded units within
    ``budget_mb`` megabytes (all of the vocabulary when it fits; 0 when the budget is 0)."""
    if budget_mb <= 0 or n_columns <= 0:
        return 0
    return max(0, min(int(vocab_size), int(budget_mb * 2**20 // (4 * n_columns)) - 1))


def layer_state_bytes(n_units: int, *, vocab_size: int, top_k: int = 20, n_random: int = 40,
                      n_quantile_bins: int = 5, per_bin: int = 2, window_tokens: int = 64,
                      token_stats_mb: float = 256.0, explain_types: Sequence[int] | None = None, **_: Any) -> int:
    """Bytes of the recording state (:meth:`Recording.state_bytes`) per recorded layer of
    ``n_units`` units, with :func:`record_activations`'s options, when each layer's per-type
    token sums get ``token_stats_mb`` (a pass over several layers is given that budget times its
    layers: the same types tracked as one layer alone). ``explain_types``: the distinct token ids of
    the corpus's explain-split windows (:func:`explain_token_types` with no bound), when known: the
    sums keep a row per tracked one of them, allocated in doublings from :data:`TOKEN_ROWS_FIRST`
    (else the estimate is a row per tracked id, the most they grow to). Planning passes over layer
    groups (:func:`pipeline.run.record_missing`), not an allocation."""
    k, T, U = top_k, window_tokens, n_units
    R = max(n_random, 2 * n_quantile_bins * per_bin, 1)
    tracked = token_types_tracked(vocab_size, U, token_stats_mb)
    rows = tracked + 1
    if explain_types is not None and tracked:
        need = bisect.bisect_left(sorted(explain_types), tracked) + 1  # the types below the bound, row 0
        rows = min(tracked + 1, TOKEN_ROWS_FIRST)
        while rows < need:
            rows = min(tracked + 1, 2 * rows)
    return (2 * U * k * (4 + 8)  # top_vals, top_ids
            + 2 * U * k * T * 4  # top_acts
            + R * U * 4 + R * T * U * 4  # res_max, res_acts
            + U * (8 + 8 + 4 + 4 + 8)  # mean, m2, vmax, vmin, active
            + (rows * U * 4 if tracked else 0))  # tok_sum (tok_count, tok_types are shared: [rows], [n + 1])


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
    top_k: int = 20,
    n_random: int = 40,
    n_quantile_bins: int = 5,
    per_bin: int = 2,
    window_tokens: int = 64,
    batch_size: int = 32,
    progress: bool = True,
    seed: int = 0,
    windows: Iterable[Window] | None = None,
    bookkeeping_threads: int | None = None,
    token_stats_mb: float = 256.0,
    token_stats_top: int = 128,
    shard: tuple[int, int] | None = None,
    on_batch: Any = None,
) -> Recording:
    """Stream the corpus (or the given ``windows``) through the model once and keep, per unit,
    the top windows, random and quantile windows and running statistics (see the module
    docstring). Returns a compact :class:`Recording`; its :meth:`Recording.records` builds the
    :class:`core.NeuronRecord` objects (layer by layer, so callers can store them in chunks).

    Defaults keep as many random windows as top windows in each split (``n_random = 2 x top_k``,
    shared by both splits), so each neuron is scored on as many random as top held-out windows,
    as OpenAI's scoring is, and the random-only part of a score is defined.

    ``seed`` fixes the reservoir sample; ``bookkeeping_threads`` is the torch thread count of
    the bookkeeping (None = leave as is; 1 on a machine shared with other work, see the module
    docstring); the forward pass keeps the process setting.
    ``token_stats_mb`` bounds the memory of the per-token-type sums (0 = none) and
    ``token_stats_top`` is how many token types each record keeps (see the module docstring).

    ``shard = (i, n)`` feeds only the batches ``i, i + n, i + 2n, …`` of the stream (the same
    batches an unsharded run forms): :func:`activations.merge.merge_recordings` of the ``n``
    shards equals the unsharded recording. A shard may hold no window (its recording then has
    no state). ``on_batch(windows)`` is called after each fed batch (progress of remote shards).

    Raises ModelError for unknown layers/units and CorpusError for an empty corpus.
    """
    import torch
    from tqdm.auto import tqdm

    layers = check_layers(target, layers)
    unit_list = check_units(target, units)
    if unit_list is not None and unit_list == list(range(target.n_units)):
        unit_list = None  # every unit in order: no column gather per layer and batch (16 % of a whole-model pass)
    for name, value, low in (("top_k", top_k, 1), ("n_random", n_random, 0), ("n_quantile_bins", n_quantile_bins, 1),
                             ("per_bin", per_bin, 0), ("window_tokens", window_tokens, 1), ("batch_size", batch_size, 1)):
        if value < low:
            raise ModelError(f"{name} must be >= {low}, got {value}")
    if shard is not None and not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
        raise ModelError(f"shard must be (i, n) with 0 <= i < n, got {shard}")
    if max_tokens < window_tokens:
        raise CorpusError(f"max_tokens ({max_tokens}) is smaller than one window ({window_tokens} tokens)")
    max_windows = max_tokens // window_tokens
    if windows is None:
        if isinstance(corpus, str):
            corpus = load_corpus(corpus)
        windows = iter_windows(target.tokenizer, corpus, window_tokens=window_tokens, max_windows=max_windows)
    n_reservoir = max(n_random, 2 * n_quantile_bins * per_bin, 1)
    n_columns = len(layers) * (len(unit_list) if unit_list is not None else target.n_units)
    token_types = token_types_tracked(len(target.tokenizer), n_columns, token_stats_mb) if token_stats_top > 0 else 0
    rec = _Recorder(target, layers, unit_list, top_k=top_k, n_reservoir=n_reservoir,
                    batch_size=batch_size, seed=seed, threads=bookkeeping_threads, token_types=token_types)
    bar = tqdm(total=max_windows, unit="win", desc=f"record {target.name}", disable=not progress)
    n_windows = n_tokens = 0
    seen = 0
    with torch.inference_mode(), unit_hooks(target, layers, rec.on_layer):
        for b, batch in enumerate(_batched(windows, batch_size)):
            seen += len(batch)
            if shard is not None and b % shard[1] != shard[0]:
                continue
            rec.feed(batch)
            n_windows += len(batch)
            n_tokens += sum(len(w.token_ids) for w in batch)
            bar.update(len(batch))
            if on_batch is not None:
                on_batch(len(batch))
    bar.close()
    if seen == 0:
        raise CorpusError(f"corpus {getattr(corpus, 'name', corpus)!r} is empty: no windows")
    return rec.recording(n_windows=n_windows, n_tokens=n_tokens, window_tokens=window_tokens,
                         n_random=n_random, n_quantile_bins=n_quantile_bins, per_bin=per_bin,
                         token_stats_top=token_stats_top)


def record_neurons(
    target: TargetModel,
    corpus: Corpus | Iterable[str] | str,
    *,
    layers: Sequence[int],
    units: Sequence[int] | None = None,
    max_tokens: int = 100_000,
    top_k: int = 20,
    n_random: int = 40,
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
