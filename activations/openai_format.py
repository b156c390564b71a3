"""Export and import records in OpenAI neuron-explainer ``NeuronRecord`` JSON.

The OpenAI form::

    {"dataclass_name": "NeuronRecord",
     "neuron_id": {"dataclass_name": "NeuronId", "layer_index": L, "neuron_index": N},
     "most_positive_activation_records": [{"dataclass_name": "ActivationRecord", "tokens": [...], "activations": [...]}, ...],
     "random_sample": [...],
     "random_sample_by_quantile": [[...], [...], ...],
     "quantile_boundaries": null, "mean": m, "variance": v, "skewness": null, "kurtosis": null}

On export neurolabel adds one top-level key ``"neurolabel"`` (model, window ids, splits, full
statistics, token statistics and the prefix tokens the activations were recorded after) so a
round trip loses nothing; ``include_neurolabel=False`` leaves it out. On import the key is used
when present.

Without it (a record of OpenAI's own), windows get ``window_id=-1`` and are sliced as OpenAI's
neuron-explainer slices them (``ActivationRecordSliceParams`` and its interleaved
train / calibration / valid / test splits): the top records, highest first, are dealt out with
stride 4 — T0, T4, T8, … explain (their *train* records), T2, T6, T10, … are scored (*valid*);
the random sample is dealt out with stride 3 and R1, R4, R7, … are scored (*valid*); random
records are never used to explain. Records of the other slices (their calibration and test
records, and the by-quantile sample) are left out of the imported record. Such a record carries
no prefix; OpenAI's GPT-2 activations were recorded without one.

The model of a record, on every door that reads records (``neurolabel import``, ``POST
/v1/explain`` and ``/v1/score``): the name the caller gives (``--model``, the request's
``model``), else the record's ``neurolabel.model``, else :data:`UNNAMED_MODEL` (``external``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from neurolabel.core.errors import NeurolabelError
from neurolabel.core.types import (
    ActivationRecord,
    NeuronId,
    NeuronRecord,
    NeuronStats,
    TokenStats,
    token_stats_from_json,
    token_stats_to_json,
)


class RecordFileError(NeurolabelError):
    """A record file or JSON object is not a (neurolabel or OpenAI) NeuronRecord."""


def _act(rec: ActivationRecord) -> dict:
    return {"dataclass_name": "ActivationRecord", "tokens": list(rec.tokens), "activations": list(rec.activations)}


def to_openai_json(record: NeuronRecord, *, include_neurolabel: bool = True) -> dict:
    """The record as an OpenAI neuron-explainer ``NeuronRecord`` JSON object."""
    n_bins = 1 + max((r.quantile or 0 for r in record.quantile), default=-1)
    by_q: list[list[dict]] = [[] for _ in range(n_bins)]
    for r in record.quantile:
        by_q[r.quantile or 0].append(_act(r))
    st = record.stats
    out: dict[str, Any] = {
        "dataclass_name": "NeuronRecord",
        "neuron_id": {
            "dataclass_name": "NeuronId",
            "layer_index": record.neuron.layer,
            "neuron_index": record.neuron.index,
        },
        "random_sample": [_act(r) for r in record.random],
        "random_sample_by_quantile": by_q or None,
        "quantile_boundaries": None,
        "mean": st.mean if st else None,
        "variance": st.std**2 if st else None,
        "skewness": None,
        "kurtosis": None,
        "most_positive_activation_records": [_act(r) for r in record.top],
    }
    if include_neurolabel:
        out["neurolabel"] = {
            "model": record.model,
            "top": [[r.window_id, r.split] for r in record.top],
            "random": [[r.window_id, r.split] for r in record.random],
            "quantile": [[r.window_id, r.split, r.quantile] for r in record.quantile],
            "stats": None if st is None else {
                "count": st.count, "mean": st.mean, "std": st.std, "max": st.max,
                "min": st.min, "frac_active": st.frac_active,
            },
            "token_stats": token_stats_to_json(record.token_stats),
            "prefix": list(record.prefix),
        }
    return out


def _token_stats(d: Any, where: str) -> TokenStats | None:
    try:
        return token_stats_from_json(d)
    except ValueError as exc:
        raise RecordFileError(f"{where}.neurolabel.token_stats: {exc}") from None


def openai_split(kind: str, position: int) -> str | None:
    """The split OpenAI's slicing gives the ``position``-th record of a list (None: not used)."""
    if kind == "top":
        return {0: "explain", 2: "score"}.get(position % 4)
    if kind == "random":
        return "score" if position % 3 == 1 else None
    return None


def _records(items: Any, kind: str, meta: list | None, where: str, quantile: int | None = None,
             offset: int = 0) -> list[ActivationRecord]:
    if not isinstance(items, list):
        raise RecordFileError(f"{where}: expected a list of activation records")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or "tokens" not in item or "activations" not in item:
            raise RecordFileError(f"{where}[{i}]: needs 'tokens' and 'activations'")
        pos = offset + i
        if meta is not None and pos < len(meta):
            wid, split = int(meta[pos][0]), meta[pos][1]
            if kind == "quantile":
                quantile = meta[pos][2]
        else:
            wid, split = -1, openai_split(kind, pos)
            if split is None:
                continue
        if split not in ("explain", "score"):
            raise RecordFileError(f"{where}[{i}]: unknown split {split!r}")
        try:
            out.append(ActivationRecord(
                tokens=tuple(str(t) for t in item["tokens"]),
                activations=tuple(float(a) for a in item["activations"]),
                window_id=wid, split=split, kind=kind, quantile=quantile,  # type: ignore[arg-type]
            ))
        except (TypeError, ValueError) as exc:
            raise RecordFileError(f"{where}[{i}]: {exc}") from None
    return out


UNNAMED_MODEL = "external"
"""Model name of a record that names none when the caller gives none either."""


def from_openai_json(d: Mapping[str, Any], *, model: str | None = None, neuron: NeuronId | None = None,
                     where: str = "record", unnamed: str | None = None) -> NeuronRecord:
    """A :class:`NeuronRecord` from OpenAI (or neurolabel-exported) JSON.

    ``model``/``neuron`` override what the object says; the object must otherwise name them
    (``neurolabel.model``, ``neuron_id``), else its model is ``unnamed`` when given (the doors
    that read records pass :data:`UNNAMED_MODEL`). Raises RecordFileError naming what is wrong."""
    if not isinstance(d, Mapping):
        raise RecordFileError(f"{where}: expected a JSON object")
    extra = d.get("neurolabel") if isinstance(d.get("neurolabel"), Mapping) else {}
    model = model or extra.get("model") or unnamed
    if not model:
        raise RecordFileError(f"{where}: no model name (pass model=... or add neurolabel.model)")
    if neuron is None:
        nid = d.get("neuron_id")
        if not isinstance(nid, Mapping) or "layer_index" not in nid or "neuron_index" not in nid:
            raise RecordFileError(f"{where}: no neuron_id with layer_index and neuron_index")
        neuron = NeuronId(int(nid["layer_index"]), int(nid["neuron_index"]))
    top = _records(d.get("most_positive_activation_records", []), "top", extra.get("top"),
                   f"{where}.most_positive_activation_records")
    rand = _records(d.get("random_sample", []) or [], "random", extra.get("random"), f"{where}.random_sample")
    quant: list[ActivationRecord] = []
    bins = d.get("random_sample_by_quantile") or []
    if not isinstance(bins, list):
        raise RecordFileError(f"{where}.random_sample_by_quantile: expected a list of lists")
    offset = 0
    for b, items in enumerate(bins):
        recs = _records(items, "quantile", extra.get("quantile"), f"{where}.random_sample_by_quantile[{b}]",
                        quantile=b, offset=offset)
        quant.extend(recs)
        offset += len(recs)
    stats = None
    if isinstance(extra.get("stats"), Mapping):
        s = extra["stats"]
        stats = NeuronStats(count=int(s["count"]), mean=float(s["mean"]), std=float(s["std"]),
                            max=float(s["max"]), min=float(s["min"]), frac_active=float(s["frac_active"]))
    prefix = extra.get("prefix") or ()
    if not isinstance(prefix, (list, tuple)) or not all(isinstance(t, str) for t in prefix):
        raise RecordFileError(f"{where}.neurolabel.prefix: expected a list of token strings")
    return NeuronRecord(model=model, neuron=neuron, top=tuple(top), random=tuple(rand), quantile=tuple(quant),
                        stats=stats, token_stats=_token_stats(extra.get("token_stats"), where),
                        prefix=tuple(prefix))


def read_records(path: str | Path, *, model: str | None = None, unnamed: str | None = None) -> list[NeuronRecord]:
    """Records from a JSON file holding one record or a list, or a JSONL file (one per line).

    ``model`` names the model of every record; ``unnamed`` that of records that name none
    (plain OpenAI files; see :func:`from_openai_json`)."""
    path = Path(path)
    if not path.is_file():
        raise RecordFileError(f"record file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RecordFileError(f"{path}: not a UTF-8 text file") from None
    try:
        data = json.loads(text)
        items = data if isinstance(data, list) else [data]
        where = [f"{path}[{i}]" if isinstance(data, list) else str(path) for i in range(len(items))]
    except json.JSONDecodeError:
        items, where = [], []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise RecordFileError(f"{path}: line {lineno}: not JSON ({exc.msg})") from None
                where.append(f"{path}: line {lineno}")
    if not items:
        raise RecordFileError(f"{path}: holds no records")
    return [from_openai_json(d, model=model, where=w, unnamed=unnamed) for d, w in zip(items, where)]


def write_records(path: str | Path, records: Any, *, include_neurolabel: bool = True) -> int:
    """Write records as JSONL (one OpenAI-format object per line), atomically; returns the count."""
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(to_openai_json(r, include_neurolabel=include_neurolabel)) + "\n")
                n += 1
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return n
