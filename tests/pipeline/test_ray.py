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
