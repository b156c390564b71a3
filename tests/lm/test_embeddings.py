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
