"""The synchronous client: :class:`Client`."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Callable, Iterator, Mapping, Sequence

import httpx

from neurolabel.client import _calls
from neurolabel.client.errors import raise_for
from neurolabel.service.schemas import ExplanationsOut, JobOut, JobSpec


class Client:
    """The neurolabel REST API, typed (``with Client(url, api_key=...) as c: ...``).

    Errors are the library's exceptions (:mod:`client.errors`). ``transport`` and other keyword
    arguments go to :class:`httpx.Client`."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout_s: float = 120.0,
                 **httpx_options: Any) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s, **httpx_options)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def _do(self, call: _calls.Call) -> Any:
        r = raise_for(self.http.request(call.method, call.path, params=dict(call.params), json=call.json))
        return r.json()

    # ------------------------------------------------------------------ explain and score
    def explain(self, records: Sequence[Any], explainers: Sequence[str], *, model: str | None = None,
                simulators: Mapping[str, str] | None = None, store: bool = False) -> ExplanationsOut:
        """Explain and score ``records`` (core ``NeuronRecord`` objects or OpenAI JSON dicts).
        What failed per record and explainer is in ``failures`` (``partial`` true); raises only
        when nothing succeeded."""
        return _calls.explanations(self._do(_calls.explain(records, explainers, model=model,
                                                           simulators=simulators, store=store)))

    def score(self, records: Sequence[Any], text: str, *, simulator: str = "embedding", model: str | None = None,
              explainer: str = "user", structured: Mapping[str, Any] | None = None) -> ExplanationsOut:
        """Score the explanation ``text`` on ``records``."""
        return _calls.explanations(self._do(_calls.score(records, text, simulator=simulator, model=model,
                                                         explainer=explainer, structured=structured)))

    # ------------------------------------------------------------------ jobs
    def submit(self, spec: JobSpec | Mapping[str, Any]) -> JobOut:
        """Queue a labelling job (a :class:`JobSpec` or its fields)."""
        return _calls.job(self._do(_calls.submit(spec)))

    def job(self, job_id: int) -> JobOut:
        """A job's state."""
        return _calls.job(self._do(_calls.Call("GET", f"/v1/jobs/{int(job_id)}")))

    def cancel(self, job_id: int) -> JobOut:
        """Cancel a queued or running job."""
        return _calls.job(self._do(_calls.Call("DELETE", f"/v1/jobs/{int(job_id)}")))

    def wait(self, job_id: int, *, timeout_s: float | None = None, poll_s: float = 1.0,
             progress: bool | Callable[[JobOut], None] = False) -> JobOut:
        """Poll the job until it is done, failed or cancelled (TimeoutError after ``timeout_s``);
        ``progress``: ``True`` for a tqdm bar, or a function called with each state seen."""
        end = None if timeout_s is None else time.monotonic() + timeout_s
        bar = _calls.Progress(job_id, progress)
        try:
            while True:
                j = self.job(job_id)
                bar.update(j)
                if j.status in _calls.FINAL:
                    return j
                if end is not None and time.monotonic() >= end:
                    raise TimeoutError(f"job {job_id} still {j.status} after {timeout_s} s")
                time.sleep(poll_s if end is None else max(0.0, min(poll_s, end - time.monotonic())))
        finally:
            bar.close()

    # ------------------------------------------------------------------ reads
    def models(self) -> list[dict[str, Any]]:
        """The recorded models."""
        return self._do(_calls.Call("GET", "/v1/models"))

    def neuron(self, model: str, layer: int, index: int) -> dict[str, Any]:
        """A neuron with its statistics, examples, explanations and best label."""
        return self._do(_calls.Call("GET", f"/v1/models/{model}/neurons/{int(layer)}/{int(index)}"))

    def label(self, model: str, layer: int, index: int) -> dict[str, Any]:
        """A neuron's best label (StorageError when it has none)."""
        return self._do(_calls.Call("GET", f"/v1/models/{model}/neurons/{int(layer)}/{int(index)}/label"))

    def search(self, q: str, *, mode: str = "text", model: str | None = None, min_score: float | None = None,
               limit: int = 20, offset: int = 0) -> list[dict[str, Any]]:
        """Labels matching ``q`` (full text, or ``mode="semantic"``)."""
        params = _calls.search_params(q, mode=mode, model=model, min_score=min_score, limit=limit, offset=offset)
        return self._do(_calls.Call("GET", "/v1/search", params=params))["items"]

    def labels(self, model: str, *, layer: int | None = None, explainer: str | None = None,
               min_score: float | None = None, updated_since: datetime | str | None = None,
               cursor: str | None = None, limit: int | None = None, resume: int = 3) -> Iterator[_calls.LabelRow]:
        """Every neuron's best label, streamed (JSON Lines) in (layer, index) order; a dropped
        connection is resumed after the last row received (up to ``resume`` times)."""
        seen = 0
        while True:
            params = _calls.labels_params(format="jsonl", layer=layer, explainer=explainer, min_score=min_score,
                                          updated_since=updated_since, cursor=cursor,
                                          limit=None if limit is None else limit - seen)
            try:
                with self.http.stream("GET", f"/v1/models/{model}/labels", params=params) as r:
                    if not r.is_success:
                        r.read()
                        raise_for(r)
                    for line in r.iter_lines():
                        row = _calls.label_line(line)
                        if row is not None:
                            cursor = row["cursor"]
                            seen += 1
                            yield row
                return
            except httpx.TransportError:
                if resume <= 0:
                    raise
                resume -= 1
