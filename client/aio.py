"""The asynchronous client: :class:`AsyncClient` (the same calls as :class:`client.Client`, awaited)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any, AsyncIterator, Callable, Mapping, Sequence

import httpx

from neurolabel.client import _calls
from neurolabel.client.errors import raise_for
from neurolabel.service.schemas import ExplanationsOut, JobOut, JobSpec


class AsyncClient:
    """The neurolabel REST API for asyncio (``async with AsyncClient(url, api_key=...) as c:``)."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout_s: float = 120.0,
                 **httpx_options: Any) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s,
                                      **httpx_options)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.http.aclose()

    async def _do(self, call: _calls.Call) -> Any:
        r = raise_for(await self.http.request(call.method, call.path, params=dict(call.params), json=call.json))
        return r.json()

    async def explain(self, records: Sequence[Any], explainers: Sequence[str], *, model: str | None = None,
                      simulators: Mapping[str, str] | None = None, store: bool = False) -> ExplanationsOut:
        """See :meth:`client.Client.explain`."""
        return _calls.explanations(await self._do(_calls.explain(records, explainers, model=model,
                                                                 simulators=simulators, store=store)))

    async def score(self, records: Sequence[Any], text: str, *, simulator: str = "embedding",
                    model: str | None = None, explainer: str = "user",
                    structured: Mapping[str, Any] | None = None) -> ExplanationsOut:
        """See :meth:`client.Client.score`."""
        return _calls.explanations(await self._do(_calls.score(records, text, simulator=simulator, model=model,
                                                               explainer=explainer, structured=structured)))

    async def submit(self, spec: JobSpec | Mapping[str, Any]) -> JobOut:
        """See :meth:`client.Client.submit`."""
        return _calls.job(await self._do(_calls.submit(spec)))

    async def job(self, job_id: int) -> JobOut:
        """See :meth:`client.Client.job`."""
        return _calls.job(await self._do(_calls.Call("GET", f"/v1/jobs/{int(job_id)}")))

    async def cancel(self, job_id: int) -> JobOut:
        """See :meth:`client.Client.cancel`."""
        return _calls.job(await self._do(_calls.Call("DELETE", f"/v1/jobs/{int(job_id)}")))

    async def wait(self, job_id: int, *, timeout_s: float | None = None, poll_s: float = 1.0,
                   progress: bool | Callable[[JobOut], None] = False) -> JobOut:
        """See :meth:`client.Client.wait`."""
        end = None if timeout_s is None else time.monotonic() + timeout_s
        bar = _calls.Progress(job_id, progress)
        try:
            while True:
                j = await self.job(job_id)
                bar.update(j)
                if j.status in _calls.FINAL:
                    return j
                if end is not None and time.monotonic() >= end:
                    raise TimeoutError(f"job {job_id} still {j.status} after {timeout_s} s")
                await asyncio.sleep(poll_s if end is None else max(0.0, min(poll_s, end - time.monotonic())))
        finally:
            bar.close()

    async def models(self) -> list[dict[str, Any]]:
        """See :meth:`client.Client.models`."""
        return await self._do(_calls.Call("GET", "/v1/models"))

    async def neuron(self, model: str, layer: int, index: int) -> dict[str, Any]:
        """See :meth:`client.Client.neuron`."""
        return await self._do(_calls.Call("GET", f"/v1/models/{model}/neurons/{int(layer)}/{int(index)}"))

    async def label(self, model: str, layer: int, index: int) -> dict[str, Any]:
        """See :meth:`client.Client.label`."""
        return await self._do(_calls.Call("GET", f"/v1/models/{model}/neurons/{int(layer)}/{int(index)}/label"))

    async def search(self, q: str, *, mode: str = "text", model: str | None = None,
                     min_score: float | None = None, limit: int = 20, offset: int = 0) -> list[dict[str, Any]]:
        """See :meth:`client.Client.search`."""
        params = _calls.search_params(q, mode=mode, model=model, min_score=min_score, limit=limit, offset=offset)
        return (await self._do(_calls.Call("GET", "/v1/search", params=params)))["items"]

    async def labels(self, model: str, *, layer: int | None = None, explainer: str | None = None,
                     min_score: float | None = None, updated_since: datetime | str | None = None,
                     cursor: str | None = None, limit: int | None = None,
                     resume: int = 3) -> AsyncIterator[_calls.LabelRow]:
        """See :meth:`client.Client.labels`."""
        seen = 0
        while True:
            params = _calls.labels_params(format="jsonl", layer=layer, explainer=explainer, min_score=min_score,
                                          updated_since=updated_since, cursor=cursor,
                                          limit=None if limit is None else limit - seen)
            try:
                async with self.http.stream("GET", f"/v1/models/{model}/labels", params=params) as r:
                    if not r.is_success:
                        await r.aread()
                        raise_for(r)
                    async for line in r.aiter_lines():
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
