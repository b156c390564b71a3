"""``neurolabel nightly CONFIG.toml``: the cron-able nightly labelling run.

For every configured model it labels what is missing or stale: the pipeline
(:func:`pipeline.run.run` of each model's job spec, converted by :func:`service.worker.job_run_spec`) records neurons that have no activations yet and
explains only neurons that lack an explanation by the *current* version of each explainer, so a
new explainer version makes the old labels stale and they are redone (old rows are kept). All
writes are idempotent and committed in small steps, so a crashed run is resumed by running the
same command again. A summary is written as JSON and Markdown next to a log file.

Config (TOML)::

    database_url = "postgresql://…/labels"   # optional, else NEUROLABEL_DATABASE_URL
    output_dir = "nightly"                   # summaries, logs and the lock file

    [[models]]
    model = "default"                         # model spec
    layers = [0, 10, 29]
    units = "0-49"                            # or a list, or absent for all units
    explainers = ["concept_induction", "pmi"]
    simulators = { concept_induction = "symbolic" }   # optional
    corpus = "default"
    max_tokens = 100000
    retry_failed = false                      # optional: retry neurons an explainer failed on before
    ontology = "default"                      # optional: a registered ontology name or an allowed path
    concurrency = 8                           # optional: neurons explained and scored at once
    embed = "best"                            # optional: labels given a vector (best, accepted, all or none)
    # explainers may be tagged configurations: [{ kind = "pmi", lam = 0.8 }, "tokens"]
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import time
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from pydantic import ValidationError

from neurolabel.core.errors import ConfigError
from neurolabel.service.schemas import JobSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NightlyConfig:
    """A parsed nightly config."""

    path: Path
    """Where the config was read from."""
    database_url: str | None
    """Label database (``None`` = settings)."""
    output_dir: Path
    """Folder of summaries, logs and the lock file."""
    models: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    """Job specs (``JobSpec`` dicts), one per configured model."""


def parse_units(value: Any, *, where: str) -> list[int] | None:
    """``None``, a list of ints, or a range string like ``"0-49,100"``."""
    if value is None:
        return None
    if isinstance(value, list):
        return [int(v) for v in value]
    if isinstance(value, str):
        out: list[int] = []
        for part in value.split(","):
            part = part.strip()
            if "-" in part:
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
        return out
    raise ConfigError(f"{where}: units must be a list or a range string like '0-49', not {value!r}")


def load_config(path: Path) -> NightlyConfig:
    """Read and validate a nightly TOML file; :class:`ConfigError` names the bad field."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the nightly config: {exc}") from exc
    unknown = set(raw) - {"database_url", "output_dir", "models"}
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {sorted(unknown)}")
    models = raw.get("models")
    if not isinstance(models, list) or not models:
        raise ConfigError(f"{path}: needs at least one [[models]] table")
    specs = []
    for i, m in enumerate(models):
        where = f"{path}: models[{i}]"
        try:
            m = dict(m)
            m["units"] = parse_units(m.get("units"), where=where)
            specs.append(JobSpec(**m).model_dump())
        except (ValidationError, ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
    out_dir = Path(raw.get("output_dir", "nightly"))
    if not out_dir.is_absolute():
        out_dir = path.parent / out_dir
    return NightlyConfig(path=path, database_url=raw.get("database_url"), output_dir=out_dir,
                         models=tuple(specs))


def _markdown(summary: dict[str, Any]) -> str:
    lines = [f"# neurolabel nightly {summary['started_at']}", "",
             f"status: **{summary['status']}**, {summary['seconds']:.1f} s, config `{summary['config']}`", "",
             "| model | layers | explainers | status | seconds | result / error |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in summary["models"]:
        spec = r["spec"]
        what = r.get("error") or json.dumps(r.get("result"), default=str)[:300]
        lines.append(f"| {spec['model']} | {spec['layers']} | {', '.join(spec['explainers'])} | "
                     f"{r['status']} | {r['seconds']:.1f} | {what} |")
    return "\n".join(lines) + "\n"


def check_sources(config: NightlyConfig, *, database_url: str, data_dirs: Sequence[str] | None = None) -> None:
    """Every configured model and corpus must be one the server allows (built-in or registered
    names, paths under ``NEUROLABEL_DATA_DIRS``): :class:`ConfigError` naming the first that is not."""
    from neurolabel.service.worker import resolve_job_sources

    for i, spec in enumerate(config.models):
        try:
            resolve_job_sources(spec, database_url=database_url, data_dirs=data_dirs)
        except ConfigError as exc:
            raise ConfigError(f"{config.path}: models[{i}]: {exc}") from None


def run_nightly(
    config: NightlyConfig,
    *,
    runner: Callable[..., Any] | None = None,
    data_dirs: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run the nightly labelling for every configured model (each failure is recorded, the
    others still run) and write ``nightly-<time>.json``/``.md`` plus ``nightly-latest.json``
    and a log file into ``config.output_dir``. Returns the summary (``status`` ``ok`` or
    ``failed``). Refuses to start while another nightly run holds the lock, and (ConfigError)
    when a model or corpus is not one the server allows (``data_dirs``: default
    ``NEUROLABEL_DATA_DIRS``)."""
    from neurolabel.service.worker import _jsonable, run_spec
    from neurolabel.storage.db import normalize_url, upgrade

    runner = runner or functools.partial(run_spec, data_dirs=data_dirs)
    url = normalize_url(config.database_url)
    upgrade(url)
    check_sources(config, database_url=url, data_dirs=data_dirs)  # before anything starts
    out = config.output_dir
    out.mkdir(parents=True, exist_ok=True)
    lock_file = open(out / "nightly.lock", "w")
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.close()
        raise ConfigError(f"{out / 'nightly.lock'}: another nightly run is in progress") from None
    started = datetime.now(timezone.utc)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    handler = logging.FileHandler(out / f"nightly-{stamp}.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    t0 = time.monotonic()
    results: list[dict[str, Any]] = []
    try:
        log.info("nightly run from %s on %d model(s)", config.path, len(config.models))
        for spec in config.models:
            t1 = time.monotonic()
            entry: dict[str, Any] = {"spec": spec}
            try:
                result = runner(spec, database_url=url, should_stop=lambda: False,
                                on_progress=lambda *a, **k: None)
                entry.update(status="ok", result=_jsonable(result))
                log.info("nightly %s: done: %s", spec["model"], entry["result"])
            except Exception as exc:  # noqa: BLE001 - one model failing must not stop the others
                log.exception("nightly %s failed", spec["model"])
                entry.update(status="failed", error=f"{type(exc).__name__}: {exc}")
            entry["seconds"] = time.monotonic() - t1
            results.append(entry)
    finally:
        summary = {
            "config": str(config.path),
            "started_at": started.isoformat(),
            "finished_at": datetime.now(timezone.utc).isoformat(),
            "seconds": time.monotonic() - t0,
            "status": "ok" if results and all(r["status"] == "ok" for r in results)
            and len(results) == len(config.models) else "failed",
            "models": results,
            "summary_json": str(out / f"nightly-{stamp}.json"),
            "summary_md": str(out / f"nightly-{stamp}.md"),
            "log": handler.baseFilename,
        }
        text = json.dumps(summary, indent=2, default=str)
        (out / f"nightly-{stamp}.json").write_text(text, encoding="utf-8")
        (out / "nightly-latest.json").write_text(text, encoding="utf-8")
        (out / f"nightly-{stamp}.md").write_text(_markdown(summary), encoding="utf-8")
        log.info("nightly summary: %s", summary["summary_json"])
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
        fcntl.flock(lock_file, fcntl.LOCK_UN)
        lock_file.close()
    return summary
