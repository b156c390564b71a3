"""Admission of labelling jobs: what a job may name, and the per-key quotas, checked before
anything is queued (and again, for the data it names, by the worker)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from neurolabel.core.errors import ConfigError
from neurolabel.service.auth import Caller
from neurolabel.service.errors import invalid
from neurolabel.service.limits import QuotaExceeded, ServiceLimits
from neurolabel.service.schemas import JobSpec
from neurolabel.service.sources import Source, resolve_source, units_per_layer


def check_sources(*, session: Session, spec: JobSpec, data_dirs: tuple[str, ...]) -> tuple[Source, Source | None]:
    """The job's model and corpus as the server allows them (422 naming the field otherwise);
    the corpus is ``None`` when the job carries its text. The ontology is checked too."""
    try:
        model = resolve_source(session=session, kind="model", name=spec.model, data_dirs=data_dirs)
    except ConfigError as exc:
        raise invalid(["body", "model"], str(exc), "not_allowed") from None
    try:
        resolve_source(session=session, kind="ontology", name=spec.ontology, data_dirs=data_dirs)
    except ConfigError as exc:
        raise invalid(["body", "ontology"], str(exc), "not_allowed") from None
    if spec.corpus_text is not None:
        if spec.corpus != "default":
            raise invalid(["body", "corpus_text"], "give either corpus or corpus_text, not both", "value_error")
        return model, None
    try:
        corpus = resolve_source(session=session, kind="corpus", name=spec.corpus, data_dirs=data_dirs)
    except ConfigError as exc:
        raise invalid(["body", "corpus"], str(exc), "not_allowed") from None
    return model, corpus


def admit_job(*, session: Session, spec: JobSpec, caller: Caller, limits: ServiceLimits,
              callback_hosts: tuple[str, ...] = ()) -> dict[str, Any]:
    """The spec to queue for ``caller``, after every check: plugin tags, model and corpus,
    corpus text size, a callback URL on a host in ``callback_hosts``, a Ray cluster the operator
    does not allow (422), neurons per job and
    jobs queued (429 with ``Retry-After``)."""
    from neurolabel.service.callbacks import check_callback_url
    from neurolabel.service.jobs import count_active
    from neurolabel.pipeline.plugins import check
    from neurolabel.pipeline.simulators import resolve

    if spec.callback_url is not None:
        try:
            check_callback_url(spec.callback_url, callback_hosts)
        except ConfigError as exc:
            raise invalid(["body", "callback_url"], str(exc), "not_allowed") from None
    if getattr(spec, "ray_address", None) is not None:  # the worker checks it again when it runs the job
        from neurolabel.core.settings import get_settings
        from neurolabel.service.worker import ray_address_allowed

        try:
            ray_address_allowed(spec.ray_address, default=None, allowed=get_settings().ray_address_list())
        except ConfigError as exc:
            raise invalid(["body", "ray_address"], str(exc), "not_allowed") from None

    for field, what in (("explainers", lambda: [check("explainer", e) for e in spec.explainers]),
                        ("simulators", lambda: resolve(spec.explainers, spec.simulators)),
                        ("scorer", lambda: check("scorer", spec.scorer))):
        try:
            what()
        except ConfigError as exc:
            raise invalid(["body", field], str(exc), "config_error") from None
    if spec.corpus_text is not None and len(spec.corpus_text) > limits.max_corpus_text_chars:
        raise invalid(["body", "corpus_text"],
                      f"corpus_text holds {len(spec.corpus_text)} characters; at most "
                      f"{limits.max_corpus_text_chars} are allowed", "string_too_long")
    model, _ = check_sources(session=session, spec=spec, data_dirs=limits.roots())
    if spec.units is not None:
        per_layer = len(set(spec.units))
    else:
        per_layer = units_per_layer(model)
        if per_layer is None:
            raise invalid(["body", "units"], f"model {spec.model!r}: list the units to label "
                          "(its width cannot be told without loading it)", "missing")
    neurons = len(set(spec.layers)) * per_layer
    if neurons > limits.max_neurons_per_job:
        raise QuotaExceeded(f"job of {neurons} neurons ({len(set(spec.layers))} layers x {per_layer} units) "
                            f"is over the limit of {limits.max_neurons_per_job} neurons per job: split it",
                            retry_after_s=60)
    active = count_active(session=session, owner_key_id=caller.key_id)
    if active >= limits.max_queued_jobs:
        raise QuotaExceeded(f"API key has {active} jobs queued or running, the limit is "
                            f"{limits.max_queued_jobs}: wait for some to finish or cancel them",
                            retry_after_s=30)
    return spec.model_dump(exclude_none=False)
