"""A typed Python client of the neurolabel REST API, on httpx: :class:`Client` (sync) and
:class:`AsyncClient` (asyncio).

    from neurolabel.client import Client

    with Client("http://127.0.0.1:8000", api_key="nl_...") as nl:
        out = nl.explain(records, ["concept_induction", "pmi"])   # partial answers: out.failures
        job = nl.submit({"layers": [3], "units": [0, 1], "explainers": ["pmi"]})
        done = nl.wait(job.id, progress=True)
        for row in nl.labels("smollm2-135m", min_score=0.3):
            print(row["layer"], row["index"], row["text"])

API errors are raised as the library's own exceptions (:mod:`client.errors`). Job callbacks are
checked with :func:`verify_signature`."""

from __future__ import annotations

from neurolabel.client._calls import LabelRow
from neurolabel.client.aio import AsyncClient
from neurolabel.client.errors import error_for
from neurolabel.client.sync import Client
from neurolabel.service.callbacks import verify_signature

__all__ = ["AsyncClient", "Client", "LabelRow", "error_for", "verify_signature"]
