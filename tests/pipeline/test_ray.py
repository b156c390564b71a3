"""A real Ray cluster on loopback (a head node and a second node, separate processes): recording
sharded across actors on both nodes merges to the local recording; Ray's absence gives an
install hint. Slow: the cluster and its workers start in ~1 min on 2 cores."""

from __future__ import annotations

import os
import sys

import pytest

from neurolabel.activations.corpus import Corpus
from neurolabel.activations.record import record_activations
from neurolabel.core.errors import ConfigError
from tests.activations.test_merge import assert_same_records
from tests.activations.test_record import _texts

RECORD = dict(max_tokens=10**9, top_k=4, n_random=6, n_quantile_bins=3, per_bin=1, window_tokens=16, batch_size=5)


@pytest.fixture(scope="module")
def cluster():
    """Head + one more node (separate raylet processes, one CPU each) on this machine's own
    address; removed at the end even on failure."""
    pytest.importorskip("ray", reason="the Ray extra is not installed (scripts/install.sh installs it)")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no token under the home folder
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "object_store_memory": 100 * 2**20}
    c = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        c.add_node(**node)
        c.wait_for_nodes(timeout=120)  # a condition: both nodes registered with the head
        yield c
    finally:
        c.shutdown()


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    from tests.activations.tiny import tiny_gpt2_dir

    return tiny_gpt2_dir(tmp_path_factory.mktemp("models"))


@pytest.mark.slow
def test_recording_on_two_nodes_equals_the_local_recording(cluster, gpt2_dir):
    from neurolabel.activations.models import load_target
    from neurolabel.pipeline.distributed import connected, record_on_ray

    texts = _texts(150, seed=3)
    kw = dict(layers=[0, 2], units=[1, 5, 9, 64, 127], **RECORD)
    local = record_activations(load_target(str(gpt2_dir)), Corpus.from_texts(texts), progress=False, **kw)
    with connected(cluster.address) as ray:
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        remote = record_on_ray(ray, str(gpt2_dir), Corpus.from_texts(texts), progress=False, **kw)
    assert remote.n_windows == local.n_windows
    assert_same_records(list(remote.records()), list(local.records()))


def test_without_ray_the_error_says_how_to_install_it(monkeypatch):
    from neurolabel.pipeline.distributed import connected, require_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'neurolabel\[ray\]'"):
        require_ray()
    with pytest.raises(ConfigError, match="Ray, which is not installed"):
        with connected("127.0.0.1:1"):
            pass


def _stored(url: str, model: str, neurons) -> list[dict]:
    """Everything stored of each neuron but row ids and timestamps."""
    from neurolabel.storage.db import session_scope
    from neurolabel.storage.queries import get_neuron

    out = []
    with session_scope(url) as session:
        for n in neurons:
            info = get_neuron(session=session, model=model, layer=n.layer, index=n.index)
            assert info is not None, n
            out.append({"stats": info["stats"], "examples": info["examples"],
                        "explanations": [{k: v for k, v in e.items() if k not in ("id", "created_at", "updated_at")}
                                         for e in info["explanations"]]})
    return out


def _tolerance(key: str, rel: float) -> float:
    if key == "stats":
        return 1e-12
    if key == "explanations":
        return 1e-5
    return rel


def _differences(a, b, path="", *, rel=0.0):
    """Paths where ``a`` and ``b`` differ: exactly (every text, token, window and count), but for
    floats derived from sums that shards add in another order than a sequential run: the float64
    running statistics (a Chan merge rounds differently: ``rel`` 1e-12) and the explanations'
    weights and scores, which read the float32 per-token-type sums (equal to float32 rounding, so
    a weight stored to 6 decimals may move by one unit of its last digit: ``rel`` 1e-5, or 2e-6
    absolute)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a)} vs {sorted(b)}"]
        return [d for k in a for d in _differences(a[k], b[k], f"{path}.{k}", rel=_tolerance(k, rel))]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]", rel=rel)]
    if isinstance(a, float) and isinstance(b, float) and rel:
        close = abs(a - b) <= rel * max(abs(a), abs(b), 1e-30) or (rel >= 1e-5 and abs(a - b) <= 2e-6)
        return [] if close else [f"{path}: {a!r} vs {b!r}"]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


@pytest.mark.slow
def test_label_run_on_ray_stores_what_a_local_run_stores(cluster, gpt2_dir, tmp_path, monkeypatch):
    from neurolabel.core.types import NeuronId
    from neurolabel.pipeline.run import run
    from neurolabel.pipeline.spec import RunSpec

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(_texts(150, seed=3)) + "\n")
    spec = RunSpec.parse({"model": str(gpt2_dir), "layers": [0, 2], "units": [1, 5, 9, 64], "corpus": str(corpus),
                          "record": {"max_tokens": 4096, "top_k": 4, "n_random": 8, "window_tokens": 16},
                          "explainers": ["tokens"], "store_every": 3})
    local_url, ray_url = f"sqlite:///{tmp_path}/local.db", f"sqlite:///{tmp_path}/ray.db"
    local = run(spec, database_url=local_url, progress=False)
    on_ray = spec.model_copy(update={"ray_address": cluster.address})

    def no_weights_here(*args, **kwargs):  # the actors record; the driver reads the model's config only
        raise AssertionError("the Ray run's driver loaded the target model's weights")

    from neurolabel.activations import models

    monkeypatch.setattr(models, "load_target", no_weights_here)  # this process only: actors are processes of their own
    remote = run(on_ray, database_url=ray_url, progress=False)
    assert (remote.recorded, remote.processed, remote.explanations) == (local.recorded, local.processed,
                                                                        local.explanations) == (8, 8, 8)
    assert not remote.errors and remote.spec["ray_address"] == cluster.address
    neurons = [NeuronId(l, u) for l in (0, 2) for u in (1, 5, 9, 64)]
    assert _differences(_stored(ray_url, local.model, neurons), _stored(local_url, local.model, neurons)) == []
    again = run(on_ray, database_url=ray_url, progress=False)  # resumed: nothing left, nothing written twice
    assert (again.recorded, again.processed, again.skipped, again.explanations) == (0, 0, 8, 0)
    assert _differences(_stored(ray_url, local.model, neurons), _stored(local_url, local.model, neurons)) == []


def test_label_cli_without_ray_says_how_to_install_it(tmp_path):
    """``neurolabel label --ray`` in a process where ``import ray`` fails: one line naming the extra."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    shim = tmp_path / "shim"
    (shim / "ray").mkdir(parents=True)
    (shim / "ray" / "__init__.py").write_text("raise ImportError('ray is hidden by this test')\n")
    res = subprocess.run([sys.executable, "-m", "neurolabel.service.cli", "label", "--layers", "0", "--units", "0",
                          "--explainers", "tokens", "--ray", "auto", "--db", f"sqlite:///{tmp_path}/x.db"],
                         cwd=root, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": f"{shim}{os.pathsep}{root}"})
    assert res.returncode != 0
    assert "pip install 'neurolabel[ray]'" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_jobs_and_nightly_configs_may_name_only_an_allowed_ray_cluster(monkeypatch, tmp_path):
    from neurolabel.core.settings import get_settings
    from neurolabel.service.worker import job_run_spec

    job = {"layers": [0], "explainers": ["tokens"]}
    kw = dict(model="default", corpus="default", ontology="default")
    monkeypatch.delenv("NEUROLABEL_RAY_ADDRESS", raising=False)
    get_settings.cache_clear()
    try:
        assert job_run_spec(job, **kw).ray_address is None
        assert job_run_spec(job, **kw).embed == "best" and job_run_spec({**job, "embed": "all"}, **kw).embed == "all"
        with pytest.raises(ConfigError, match="'evil:6379' is not a Ray cluster this server allows"):
            job_run_spec({**job, "ray_address": "evil:6379"}, **kw)
        monkeypatch.setenv("NEUROLABEL_RAY_ADDRESS", "head:6379")
        monkeypatch.setenv("NEUROLABEL_RAY_ADDRESSES", "gpu-head:6379")
        get_settings.cache_clear()
        assert job_run_spec(job, **kw).ray_address == "head:6379"  # the operator's default
        assert job_run_spec({**job, "ray_address": "gpu-head:6379"}, **kw).ray_address == "gpu-head:6379"
        with pytest.raises(ConfigError, match="allowed: head:6379, gpu-head:6379"):
            job_run_spec({**job, "ray_address": "evil:6379"}, **kw)
        # the nightly config names it in a [[models]] table, converted like a queued job
        from neurolabel.service.nightly import load_config

        cfg = tmp_path / "nightly.toml"
        cfg.write_text('[[models]]\nlayers = [0]\nexplainers = ["tokens"]\nray_address = "gpu-head:6379"\n')
        (model_spec,) = load_config(cfg).models
        assert job_run_spec(model_spec, **kw).ray_address == "gpu-head:6379"
    finally:
        get_settings.cache_clear()
