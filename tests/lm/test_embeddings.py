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
