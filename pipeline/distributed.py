"""A labelling run on a Ray cluster (``RunSpec.ray_address``; ``neurolabel label --ray ADDRESS``).

The stages are the local run's (:mod:`pipeline.run`); only where they execute changes:

- **record missing**: the corpus is sharded by batches of windows across *recording actors*,
  each holding the target model (one per CPU of the cluster, or per GPU where nodes have GPUs);
  actor ``i`` of ``n`` feeds the batches ``i, i + n, …`` of the stream an unsharded run forms,
  and the driver merges their recorder states exactly (:func:`activations.merge.merge_recordings`:
  top-k by (max, window id), hash-priority reservoirs, Chan-merged statistics, added token-type
  sums), so it stores the records a local run stores;
- **explain and score**: neurons are sent in batches of ``spec.store_every`` (smaller when
  that would leave actors idle) to *labelling actors* that build the spec's plugins once (ontology, models) and explain and score each
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
import math
import time
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
        cpu, wall = time.process_time(), time.perf_counter()
        rec = portable(record_activations(self.target, corpus, progress=False, shard=shard, on_batch=seen, **kwargs))
        return rec, time.process_time() - cpu, time.perf_counter() - wall

    def progress(self) -> int:
        return self.done


class RecordingPool:
    """Recording actors, each holding the target model, reused for every corpus pass of a run
    (one per layer group): :meth:`record` shards one pass across them and merges the shards."""

    def __init__(self, ray: Any, model: str, *, workers: int | None = None) -> None:
        n, resources = n_workers(ray)
        self.ray, self.model, self.n = ray, model, workers or n
        actor_cls = ray.remote(**resources, max_concurrency=2)(_RecordShard)  # a 2nd thread answers progress()
        self.actors = [actor_cls.remote(model) for _ in range(self.n)]
        self.cpu_s: list[float] = []
        """CPU seconds each actor spent on its shard of the last pass."""
        self.wall_s: list[float] = []
        """Seconds each actor took for its shard of the last pass (inside the actor)."""

    def record(self, corpus: Any, *, layers: Sequence[int], units: Sequence[int] | None, progress: bool = True,
               **kwargs: Any) -> Any:
        """:func:`activations.record.record_activations` of the whole corpus, sharded across the
        actors; returns the merged :class:`Recording`."""
        from tqdm.auto import tqdm

        from neurolabel.activations.merge import merge_recordings

        ray = self.ray
        args = dict(kwargs, layers=list(layers), units=list(units) if units is not None else None)
        refs = [a.record.remote(corpus, args, (i, self.n)) for i, a in enumerate(self.actors)]
        bar = tqdm(unit="win", desc=f"record {self.model} on {self.n} Ray workers", disable=not progress)
        pending = list(refs)
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=_POLL_S)
            if progress:
                bar.n = sum(ray.get([a.progress.remote() for a in self.actors]))
                bar.refresh()
        bar.close()
        parts = ray.get(refs)
        self.cpu_s = [cpu for _, cpu, _ in parts]
        self.wall_s = [wall for _, _, wall in parts]
        return merge_recordings([rec for rec, _, _ in parts])

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []

    def __enter__(self) -> "RecordingPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def record_on_ray(ray: Any, model: str, corpus: Any, *, layers: Sequence[int], units: Sequence[int] | None,
                  progress: bool = True, workers: int | None = None, **kwargs: Any) -> Any:
    """One sharded corpus pass on a fresh :class:`RecordingPool`; returns the merged recording."""
    with RecordingPool(ray, model, workers=workers) as pool:
        return pool.record(corpus, layers=layers, units=units, progress=progress, **kwargs)


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


def run_on_ray(spec: Any, *, database_url: str | None = None, progress: bool = True,
               should_stop: Callable[[], bool] | None = None,
               on_progress: Callable[[int, int, Mapping[str, Any]], None] | None = None) -> Any:
    """Run ``spec`` on the Ray cluster at ``spec.ray_address`` (see the module docstring): the
    same stages and the same stored result as :func:`pipeline.run.run` in this process."""
    from tqdm.auto import tqdm

    from neurolabel.pipeline import run as local

    with connected(spec.ray_address) as ray:
        prepared = local.prepare(spec, database_url=database_url, progress=progress,
                                 recorder=lambda: RecordingPool(ray, spec.model))
        summary, url = prepared.summary, prepared.database_url
        bar = tqdm(total=len(prepared.wanted), unit="neuron", desc=f"label {summary.model} on Ray",
                   disable=not progress)
        done_count = 0
        workers = n_workers(ray)[0]
        # batches of store_every neurons, smaller when that would leave workers idle (>= 4 per worker)
        per_batch = max(1, min(spec.store_every, math.ceil(len(prepared.wanted) / (4 * workers))))

        def batches() -> Iterator[list[tuple[Any, list[str]]]]:
            nonlocal done_count
            batch: list[tuple[Any, list[str]]] = []
            for neuron in prepared.wanted:
                todo = prepared.todo(neuron)
                if not todo:
                    summary.skipped += 1
                    done_count += 1
                    bar.update(1)
                    continue
                t0 = time.perf_counter()
                record = local.load(neuron, model=summary.model, database_url=url)
                summary.times.load_s += time.perf_counter() - t0
                if record is None:
                    summary.errors.append(f"{neuron}: not recorded")
                    done_count += 1
                    bar.update(1)
                    continue
                batch.append((record, todo))
                if len(batch) >= per_batch:
                    yield batch
                    batch = []
            if batch:
                yield batch

        def stored(batch: list[tuple[Any, list[str]]], results: list[Any]) -> None:
            nonlocal done_count
            explanations = [e for r in results for e in r.explanations]
            failures = [f for r in results for f in r.failures]
            t0 = time.perf_counter()
            summary.accepted += local.store(explanations, failures, database_url=url, model=summary.model,
                                            versions=prepared.versions, threshold=spec.threshold,
                                            embed=spec.embed)
            summary.times.store_s += time.perf_counter() - t0
            summary.explanations += len(explanations)
            for r in results:
                summary.times.add(r.times)
                summary.errors.extend(r.errors)
            summary.processed += len(batch)
            done_count += len(batch)
            bar.update(len(batch))
            if on_progress is not None:
                on_progress(done_count, len(prepared.wanted), {"neuron": str(batch[-1][0].neuron),
                                                               "explanations": summary.explanations,
                                                               "errors": len(summary.errors)})

        summary.stopped = not label_on_ray(ray, spec, batches(), on_result=stored, should_stop=should_stop,
                                           workers=workers)
        bar.close()
    summary.elapsed_s = time.perf_counter() - prepared.t_start
    log.info("labelled %s on Ray: %s", summary.model, summary.as_dict())
    return summary


__all__ = ["INSTALL_HINT", "RecordingPool", "connected", "label_on_ray", "n_workers", "record_on_ray", "require_ray",
           "run_on_ray"]
