"""A labelling run on a Ray cluster (``RunSpec.ray_address``; ``neurolabel label --ray ADDRESS``).

The stages are the local run's (:mod:`pipeline.run`); only where they execute changes:

- **record missing**: the corpus is sharded by batches of windows across *recording actors*,
  each holding the target model (one per CPU of the cluster, or per GPU where nodes have GPUs);
  actor ``i`` of ``n`` feeds the batches ``i, i + n, …`` of the stream an unsharded run forms,
  and the driver merges their recorder states exactly (:func:`activations.merge.merge_recordings`:
  top-k by (max, window id), hash-priority reservoirs, Chan-merged statistics, added token-type
  sums), so it stores the records a local run stores;
- **explain and score**: neurons are sent in batches of ``spec.store_every`` to *labelling
  actors* that build the spec's plugins once (ontology, models) and explain and score each
  batch (``spec.concurrency`` neurons at a time inside an actor: the LLM bound);
- **store**: the driver writes each batch as it comes back; the writes are keyed by neuron and
  explainer (version), so a batch written twice (a retried actor call, a resumed run) leaves
  one row.

Ray is an optional extra: ``pip install 'neurolabel[ray]'``. ``ray_address`` is what
``ray.init`` takes (``auto``, ``host:port`` of a head node, ``ray://host:10001``); ``local``
starts a private single-node Ray instance inside this process (benchmarks, one machine).
Every node needs neurolabel installed and the model, corpus and ontology at the same paths.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterator, Mapping, Sequence

from neurolabel.core.errors import ConfigError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'neurolabel[ray]' (in a checkout: pip install -e '.[ray]')"
_POLL_S = 0.5


def require_ray() -> Any:
    """The ``ray`` module, or :class:`ConfigError` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"running on a Ray cluster needs Ray, which is not installed here: {INSTALL_HINT}") from exc
    return ray


@contextlib.contextmanager
def connected(address: str, *, num_cpus: int | None = None) -> Iterator[Any]:
    """Connect this process to the Ray cluster at ``address`` (``local``: start a private one
    with ``num_cpus`` CPUs) for the duration of the block."""
    ray = require_ray()
    if ray.is_initialized():  # e.g. a driver script that connected itself
        yield ray
        return
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address == "local":
        kwargs.update(num_cpus=num_cpus, include_dashboard=False)
    else:
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def n_workers(ray: Any) -> tuple[int, dict[str, float]]:
    """How many actors to start and the resources of each: one per GPU when the cluster has
    GPUs, else one per CPU."""
    res = ray.cluster_resources()
    if res.get("GPU", 0) >= 1:
        return int(res["GPU"]), {"num_gpus": 1, "num_cpus": 1}
    return max(1, int(res.get("CPU", 1))), {"num_cpus": 1}


class _RecordShard:
    """Ray actor: holds the target model, records one shard of the corpus."""

    def __init__(self, model: str) -> None:
        import torch

        from neurolabel.activations.models import load_target

        torch.set_num_threads(1)
        self.target = load_target(model)
        self.done = 0

    def record(self, corpus: Any, kwargs: Mapping[str, Any], shard: tuple[int, int]) -> Any:
        from neurolabel.activations.merge import portable
        from neurolabel.activations.record import record_activations

        def seen(n: int) -> None:
            self.done += n

        self.done = 0
        rec = record_activations(self.target, corpus, progress=False, shard=shard, on_batch=seen, **kwargs)
        return portable(rec)

    def progress(self) -> int:
        return self.done


def record_on_ray(ray: Any, model: str, corpus: Any, *, layers: Sequence[int], units: Sequence[int] | None,
                  progress: bool = True, workers: int | None = None, **kwargs: Any) -> Any:
    """:func:`activations.record.record_activations` of the whole corpus, sharded across Ray
    actors that each hold ``model``; returns the merged :class:`Recording`."""
    from tqdm.auto import tqdm

    from neurolabel.activations.merge import merge_recordings

    n, resources = n_workers(ray)
    n = workers or n
    actor_cls = ray.remote(**resources, max_concurrency=2)(_RecordShard)  # a second thread answers progress()
    actors = [actor_cls.remote(model) for _ in range(n)]
    try:
        args = dict(kwargs, layers=list(layers), units=list(units) if units is not None else None)
        refs = [a.record.remote(corpus, args, (i, n)) for i, a in enumerate(actors)]
        bar = tqdm(unit="win", desc=f"record {model} on {n} Ray workers", disable=not progress)
        pending = list(refs)
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=_POLL_S)
            if progress:
                bar.n = sum(ray.get([a.progress.remote() for a in actors]))
                bar.refresh()
        bar.close()
        return merge_recordings(ray.get(refs))
    finally:
        for a in actors:
            ray.kill(a)


class _Labeller:
    """Ray actor: builds a run's plugins once, explains and scores batches of records."""

    def __init__(self, spec_json: Mapping[str, Any]) -> None:
        from neurolabel.pipeline.run import build_plugins
        from neurolabel.pipeline.spec import RunSpec

        self.spec = RunSpec.model_validate(dict(spec_json))
        self.plugins = build_plugins(self.spec)

    def label(self, batch: Sequence[tuple[Any, Sequence[str]]]) -> list[Any]:
        from concurrent.futures import ThreadPoolExecutor

        from neurolabel.pipeline.run import explain_and_score_one

        with ThreadPoolExecutor(max_workers=max(1, min(self.spec.concurrency, len(batch)))) as pool:
            return list(pool.map(lambda item: explain_and_score_one(item[0], list(item[1]), self.plugins), batch))


def label_on_ray(ray: Any, spec: Any, batches: Iterator[list[tuple[Any, Sequence[str]]]], *,
                 on_result: Callable[[list[tuple[Any, Sequence[str]]], list[Any]], None],
                 should_stop: Callable[[], bool] | None = None, workers: int | None = None) -> bool:
    """Explain and score ``batches`` of ``(record, explainers to run)`` on labelling actors (two
    batches in flight per actor); ``on_result(batch, results)`` is called in this process as
    each batch comes back, in completion order. Returns False when ``should_stop`` ended it."""
    n = workers or n_workers(ray)[0]
    actor_cls = ray.remote(num_cpus=1)(_Labeller)
    actors = [actor_cls.remote(spec.as_json()) for _ in range(n)]
    in_flight: dict[Any, tuple[Any, list]] = {}
    stopped = False
    try:
        free = [a for a in actors for _ in range(2)]
        for batch in batches:
            while not free:
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                actor, done = in_flight.pop(ready[0])
                on_result(done, ray.get(ready[0]))
                free.append(actor)
            if should_stop is not None and should_stop():
                stopped = True
                break
            actor = free.pop(0)
            in_flight[actor.label.remote(batch)] = (actor, batch)
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            _, done = in_flight.pop(ready[0])
            on_result(done, ray.get(ready[0]))
    finally:
        for a in actors:
            ray.kill(a)
    return not stopped


__all__ = ["INSTALL_HINT", "connected", "label_on_ray", "n_workers", "record_on_ray", "require_ray"]
