"""ETag bodies: canonical JSON written once, datetimes as FastAPI writes them, stored JSON text
(``RawJSON``) written as it is, even beside strings that look like its placeholder."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from fastapi.encoders import jsonable_encoder

from neurolabel.service.etag import _canonical
from neurolabel.storage.reads import RawJSON


def test_plain_values_as_jsonable_encoder_writes_them() -> None:
    value = {"b": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc), "a": (1, 2.5, None), "c": {3}}
    want = json.dumps(jsonable_encoder(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert _canonical(value) == want.encode()


def test_raw_json_is_written_as_stored() -> None:
    value = {"examples": [{"tokens": RawJSON('[" a", "b\\"c", "\\u0000raw-"]'), "activations": RawJSON("[0.5, 1e-3]")},
                          {"tokens": RawJSON("[]"), "note": "\x00raw-0\x00 looks like a placeholder"}], "é": 1}
    body = _canonical(value)
    assert json.loads(body) == {"examples": [{"tokens": [" a", 'b"c', "\x00raw-"], "activations": [0.5, 0.001]},
                                             {"tokens": [], "note": "\x00raw-0\x00 looks like a placeholder"}],
                                "é": 1}
    assert b'"activations":[0.5, 1e-3]' in body
