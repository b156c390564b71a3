"""all-MiniLM-L6-v2 loaded by many threads at once in a fresh process: one load, one model,
every thread embeds (an unlocked ``lru_cache`` loaded it twice; one copy had meta tensors)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import threading
    import numpy as np
    from neurolabel.lm import embeddings

    barrier = threading.Barrier(8)
    models, vectors, errors = [], [], []

    def use():
        barrier.wait()
        try:
            models.append(embeddings.load_embedder())
            vectors.append(embeddings.embed(["a dog barks"]))
        except Exception as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len({id(m) for m in models}) == 1, f"{len({id(m) for m in models})} models loaded"
    assert all(np.allclose(v, vectors[0]) for v in vectors) and vectors[0].shape == (1, 384)
    print("ok")
""")


def test_concurrent_first_use_loads_one_model():
    res = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                              "HOME": str(Path.home()), "TOKENIZERS_PARALLELISM": "false"})
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stdout + res.stderr


def test_length_batches_give_the_same_vectors_in_order_and_restore_threads():
    """Texts batched by token length (a long one alone), on one thread: the same vectors, in the
    caller's order, as one plain batch; torch's thread setting is what it was before."""
    import numpy as np
    import torch

    from neurolabel.lm import embeddings

    texts = ["dog", "mentions of " + ", ".join(f"word{i}" for i in range(150)), "a token right after a noun",
             "cat", "", "punctuation marks (full stop, comma)"] * 3
    before = torch.get_num_threads()
    plain = embeddings.embed(texts, batch_size=64)
    model = embeddings.load_embedder()
    batches = embeddings._length_batches(model, texts, 64, 4)
    assert sorted(int(i) for b in batches for i in b) == list(range(len(texts)))
    assert max(len(b) for b in batches) <= 4
    assert all(len(b) == 1 for b in batches if {1, 7, 13} & set(b.tolist()))  # a long text is batched alone
    got = embeddings.embed(texts, batch_size=4, threads=1, max_batch_tokens=64)
    assert got.shape == (len(texts), 384) and np.abs(got - plain).max() < 1e-5
    assert torch.get_num_threads() == before


def _label_texts() -> list[str]:
    """Label-like texts (the shapes concept induction, PMI and token lists write), 5–60 tokens."""
    words = ["dog", "cat", "with", "having", "king", "queen", "sword", "battle", "river", "mercy", "counsel",
             "great", "good", "minor", "holland", "germans", "bone", "title", "edward", "my", "no", "so"]
    kinds = ["animal", "person", "weapon", "body of water", "feeling", "preposition", "noun", "possessive",
             "abstraction", "European", "connective tissue", "writing", "ruler"]
    out = []
    for i, w in enumerate(words):
        k, k2, w2 = kinds[i % len(kinds)], kinds[(3 * i + 1) % len(kinds)], words[(5 * i + 2) % len(words)]
        out += [w, f'"{w}"', f"mentions of a kind of {k} ({w}, {w2})",
                f'mentions of the token "{w}", a kind of {k2} or a token right after the token "{w2}"',
                f"mentions of a token right after {w}; lower on mentions of a kind of {k} ({w2}), a kind of {k2}",
                f"fires by tier 3.1: “{w}” “{w2}”; 1.2: “)” “]”; else 0.1"]
    return out


def test_bfloat16_label_vectors_stay_near_float32():
    """Label embeddings at bfloat16 (what labels and queries use where the CPU has it) keep the
    float32 vectors' neighbours: cosine to float32 >= 0.9995 and recall@10 of float32 exact
    label-to-label neighbours >= 0.95; ``embed_labels`` is ``embed`` at ``label_precision()``."""
    import numpy as np

    from neurolabel.lm import embeddings

    texts = _label_texts()
    f32 = embeddings.embed(texts, max_batch_tokens=2048, batch_size=256)
    bf16 = embeddings.embed(texts, max_batch_tokens=2048, batch_size=256, precision="bfloat16")
    assert bf16.dtype == np.float32 and np.allclose(np.linalg.norm(bf16, axis=1), 1, atol=1e-5)
    cos = (f32 * bf16).sum(1)
    assert cos.min() >= 0.9995, cos.min()
    k = 10
    want = np.argsort(-(f32 @ f32.T), axis=1)[:, :k]
    got = np.argsort(-(bf16 @ bf16.T), axis=1)[:, :k]
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(want, got)])
    assert recall >= 0.95, recall
    print(f"bfloat16 vs float32 on {len(texts)} label texts: cosine min {cos.min():.5f}, recall@10 {recall:.3f}")
    same = embeddings.embed(texts, max_batch_tokens=2048, batch_size=256, threads=1,
                            precision=embeddings.label_precision())
    assert np.array_equal(embeddings.embed_labels(texts), same)
    with pytest.raises(ValueError, match="precision"):
        embeddings.embed(texts, precision="int8")


@pytest.mark.parametrize("setting", ["auto", "float32", "bfloat16"])
def test_label_precision_follows_the_setting_the_cpu_and_the_measured_gain(monkeypatch, setting):
    """``NEUROLABEL_LABEL_PRECISION`` picks the label embeddings' precision; ``auto`` takes
    bfloat16 where the CPU has AMX tiles, and where it has AVX-512 BF16 without AMX only when
    bfloat16 measured at least ``BF16_MIN_GAIN`` times float32's speed (3.1x on a Zen 5 EPYC,
    0.66x on a Xeon with the same flags); a CPU with neither is not measured; a bad value is
    refused naming the setting."""
    from pydantic import ValidationError

    from neurolabel.core.settings import Settings, get_settings
    from neurolabel.lm import embeddings

    monkeypatch.setenv("NEUROLABEL_LABEL_PRECISION", setting)
    get_settings.cache_clear()
    measured = []

    def gain(value):
        def measure():
            measured.append(value)
            return value
        return measure

    try:
        for amx, bf16, speed, auto in [(True, True, 0.5, "bfloat16"), (True, False, 0.5, "bfloat16"),
                                       (False, True, 3.1, "bfloat16"), (False, True, 1.2, "float32"),
                                       (False, True, 0.66, "float32"), (False, False, 3.1, "float32")]:
            monkeypatch.setattr(embeddings, "amx_tiles", lambda amx=amx: amx)
            monkeypatch.setattr(embeddings, "avx512_bf16", lambda bf16=bf16: bf16)
            monkeypatch.setattr(embeddings, "bf16_gain", gain(speed))
            measured.clear()
            assert embeddings.label_precision() == (setting if setting != "auto" else auto), (amx, bf16, speed)
            # measured only where the choice depends on it
            assert measured == ([speed] if setting == "auto" and bf16 and not amx else [])
    finally:
        get_settings.cache_clear()
    with pytest.raises(ValidationError, match="label_precision"):
        Settings(label_precision="int8")


def test_bf16_gain_is_measured_once_per_process(monkeypatch):
    """The gain is a positive ratio of two real timings of MiniLM on this CPU, measured on the
    first call and kept (a labelling run's workers inherit the parent's figure over the fork)."""
    import math

    from neurolabel.lm import embeddings

    monkeypatch.setattr(embeddings, "_gain", [])
    calls = []
    real = embeddings.embed

    def counted(*args, **kwargs):
        calls.append(kwargs.get("precision"))
        return real(*args, **kwargs)

    monkeypatch.setattr(embeddings, "embed", counted)
    first = embeddings.bf16_gain()
    assert math.isfinite(first) and first > 0
    assert sorted(set(calls)) == ["bfloat16", "float32"] and len(calls) == 6
    assert embeddings.bf16_gain() == first and len(calls) == 6
