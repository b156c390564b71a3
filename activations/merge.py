"""Exact merging of recordings of corpus shards.

A corpus recorded in shards (``record_activations(..., shard=(i, n))``, e.g. one shard per Ray
actor) is merged back into the recording that one pass over the whole corpus gives, because
every part of a recorder's state has an order-free merge:

- **top-k per split**: the union of the shards' slots, cut to the ``k`` first in (window max
  descending, window id ascending) order, the order the streaming recorder keeps;
- **reservoir**: every window's priority is a hash of ``(seed, window id)``
  (:func:`activations.record.window_priority`), so the union of the shards' reservoirs cut to the
  ``R`` lowest priorities is the reservoir of the whole stream; the quantile windows are derived
  from it when the records are built;
- **running statistics**: counts, maxima, minima and positive counts combine exactly; means and
  sums of squared deviations by Chan et al.'s parallel merge (float64, so they agree with the
  unsharded run to float64 rounding, ~1e-12 relative);
- **per-token-type sums**: added (float32 sums: equal to the unsharded run's to float32
  rounding of the order of addition).

Window choices, the per-token activations of every kept window, counts, maxima and minima are
identical to the unsharded run's whenever the shards ran the same batches on the same kind of
device (a shard feeds whole batches of the unsharded stream, so its forward passes see the same
inputs).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

from neurolabel.activations.record import Recording, _State, window_priority
from neurolabel.core.errors import CorpusError, ModelError

_SAME = ("model", "layers", "units", "window_tokens", "top_k", "n_random", "n_quantile_bins", "per_bin", "seed",
         "prefix", "token_stats_top")


class TokenTable:
    """Token id -> string from a table (a picklable stand-in for a tokenizer's decoder)."""

    def __init__(self, names: dict[int, str]) -> None:
        self.names = names

    def __call__(self, ids: Sequence[int]) -> list[str]:
        return [self.names[int(i)] for i in ids]


def portable(recording: Recording) -> Recording:
    """The recording with its tensors on the CPU and its decoder replaced by a table of the token
    types it saw, so it can be sent to another process (a Ray actor's result) without the
    tokenizer."""
    st = recording.state
    if st is None:
        return replace(recording, decode=TokenTable({}))
    cpu = _on(st, "cpu")
    names: dict[int, str] = {}
    if st.tok_count is not None and recording.token_stats_top > 0:
        rows = (cpu.tok_count[1:] > 0).nonzero().squeeze(1) + 1  # row 0: the untracked types
        seen = cpu.tok_types[rows].tolist()  # the rows' token ids
        names = dict(zip(seen, recording.decode(seen))) if seen else {}
    return replace(recording, state=cpu, decode=TokenTable(names))


def merge_recordings(parts: Sequence[Recording]) -> Recording:
    """The recording of the whole corpus from the recordings of its shards (see the module
    docstring). Raises ModelError when the parts were recorded with different settings and
    CorpusError when no part holds a window."""
    import torch

    if not parts:
        raise CorpusError("no recording to merge")
    first = parts[0]
    for p in parts[1:]:
        for name in _SAME:
            if getattr(p, name) != getattr(first, name):
                raise ModelError(f"cannot merge recordings with different {name}: "
                                 f"{getattr(first, name)!r} vs {getattr(p, name)!r}")
    full = [p for p in parts if p.state is not None]
    if not full:
        raise CorpusError("every shard of the corpus is empty: no windows")
    states = [p.state for p in full]
    dev = states[0].top_vals.device
    states = [_on(s, dev) for s in states]
    if len({s.tok_types is None for s in states}) > 1 or len({s.tracked_types for s in states}) > 1:
        raise ModelError("cannot merge recordings with and without token statistics, or tracking different types")
    k = first.top_k
    # top-k per split: the k first of the union in (max desc, id asc) order
    vals = torch.cat([s.top_vals for s in states], dim=2)  # [2, LU, n*k]
    ids = torch.cat([s.top_ids for s in states], dim=2)
    acts = torch.cat([s.top_acts for s in states], dim=2)  # [2, LU, n*k, T]
    by_id = torch.argsort(ids, dim=2)
    _, pos = torch.sort(vals.gather(2, by_id), dim=2, descending=True, stable=True)
    keep = by_id.gather(2, pos[..., :k])  # [2, LU, k]
    top_vals, top_ids = vals.gather(2, keep), ids.gather(2, keep)
    top_acts = acts.gather(2, keep[..., None].expand(-1, -1, -1, acts.shape[-1]))
    # reservoir: the R lowest (priority, id) of the union
    R = states[0].res_max.shape[0]
    pool = sorted((window_priority(first.seed, wid), wid, i, r)
                  for i, p in enumerate(full) for r, wid in enumerate(p.res_ids))[:R]
    res_max = torch.zeros_like(states[0].res_max)
    res_acts = torch.zeros_like(states[0].res_acts)
    for slot, (_, _, i, r) in enumerate(pool):
        res_max[slot] = states[i].res_max[r]
        res_acts[slot] = states[i].res_acts[r]
    # running statistics: Chan et al.
    count, mean, m2 = states[0].count, states[0].mean.clone(), states[0].m2.clone()
    for s in states[1:]:
        if s.count == 0:
            continue
        tot = count + s.count
        delta = s.mean - mean
        mean += delta * (s.count / tot)
        m2 += s.m2 + delta * delta * (count * s.count / tot)
        count = tot
    merged = _State(
        top_vals=top_vals, top_ids=top_ids, top_acts=top_acts, res_max=res_max, res_acts=res_acts,
        mean=mean, m2=m2,
        vmax=torch.stack([s.vmax for s in states]).amax(dim=0),
        vmin=torch.stack([s.vmin for s in states]).amin(dim=0),
        active=torch.stack([s.active for s in states]).sum(dim=0),
        count=count,
        **_token_sums(states), tracked_types=states[0].tracked_types,
    )
    res_ids = [wid for _, wid, _, _ in pool]
    kept = set(res_ids) | set(top_ids.unique().tolist())
    tokens = {w: t for p in full for w, t in p.tokens.items() if w in kept}
    decode = first.decode
    if all(isinstance(p.decode, TokenTable) for p in parts):
        decode = TokenTable({i: n for p in parts for i, n in p.decode.names.items()})
    return replace(first, state=merged, res_ids=res_ids, tokens=tokens, decode=decode,
                   n_windows=sum(p.n_windows for p in parts), n_tokens=sum(p.n_tokens for p in parts))


def _on(state: _State, dev: Any) -> _State:
    return _State(**{f: (getattr(state, f).to(dev) if hasattr(getattr(state, f), "to")
                         else getattr(state, f)) for f in _State.__dataclass_fields__})


def _token_sums(states: Sequence[_State]) -> dict[str, Any]:
    """The shards' per-type sums added up: a row per type any shard saw (each shard numbers its
    rows in the order it first saw the types; the merged rows are in token-id order), row 0 for the
    untracked types; each shard's rows added in the shards' order."""
    import torch

    if states[0].tok_types is None:
        return {"tok_sum": None, "tok_count": None, "tok_types": None}
    union = sorted({t for s in states for t in s.tok_types[1:].tolist()})
    row = {t: r for r, t in enumerate(union, start=1)}
    first = states[0].tok_sum
    tok_sum = torch.zeros((first.shape[0], len(union) + 1, first.shape[2]), dtype=first.dtype, device=first.device)
    tok_count = torch.zeros(len(union) + 1, dtype=states[0].tok_count.dtype, device=first.device)
    for s in states:
        rows = torch.tensor([0, *(row[t] for t in s.tok_types[1:].tolist())], dtype=torch.long, device=first.device)
        tok_sum.index_add_(1, rows, s.tok_sum)
        tok_count.index_add_(0, rows, s.tok_count)
    return {"tok_sum": tok_sum, "tok_count": tok_count,
            "tok_types": torch.tensor([-1, *union], dtype=torch.long, device=first.device)}


__all__ = ["TokenTable", "merge_recordings", "portable"]
