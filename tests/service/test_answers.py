"""service.answers.page writes a Page answer byte for byte as FastAPI writes the dict under
``response_model=Page``: compared over HTTP on pages of random floats of every magnitude, random
strings over all of Unicode, enums, and the values it leaves to FastAPI (datetimes, big integers,
non-string keys)."""

from __future__ import annotations

import enum
import math
import random
import struct
from datetime import datetime, timezone

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from neurolabel.service.answers import page
from neurolabel.service.schemas import Page


class _Colour(str, enum.Enum):
    RED = "red"


def _items(seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(200):
        bits = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        scaled = rng.uniform(-1, 1) * 10 ** rng.randint(-12, 22)
        text = "".join(chr(rng.choice([rng.randint(0, 0x7F), rng.randint(0x80, 0xD7FF), rng.randint(0xE000, 0x10FFFF)]))
                       for _ in range(rng.randint(0, 10)))
        out.append({"model": text, "layer": i, "index": rng.getrandbits(62), "recorded": bool(i % 2),
                    "best_score": bits, "label": text or None, "label_score": scaled, "nested": [scaled, {text: None}]})
    out.append({"specials": [0.0, -0.0, math.inf, -math.inf, math.nan, 1e-7, 1e21, 5e-324]})
    return out


def _client(items: list[dict]) -> TestClient:
    app = FastAPI()

    @app.get("/by-fastapi", response_model=Page)
    def by_fastapi() -> dict:
        return {"items": items, "limit": 7, "offset": 3}

    @app.get("/by-page", response_model=Page)
    def by_page():
        return page(items, 7, 3)

    return TestClient(app)


@pytest.mark.parametrize("seed", range(5))
def test_page_writes_what_fastapi_writes(seed: int) -> None:
    items = _items(seed)
    assert not isinstance(page(items, 7, 3), dict)  # written by orjson, not handed back
    with _client(items) as http:
        want, got = http.get("/by-fastapi"), http.get("/by-page")
    assert got.status_code == want.status_code == 200
    assert got.content == want.content
    assert got.headers["content-type"] == want.headers["content-type"]
    assert got.headers["content-length"] == want.headers["content-length"]


@pytest.mark.parametrize("value", [datetime(2026, 11, 30, 10, 1, 2, 345678, tzinfo=timezone.utc), 2**70,
                                   {1: "int key"}])
def test_values_orjson_would_write_differently_are_left_to_fastapi(value) -> None:
    items = [{"x": value, "y": 0.5}]
    assert page(items, 1, 0) == {"items": items, "limit": 1, "offset": 0}
    with _client(items) as http:
        assert http.get("/by-page").content == http.get("/by-fastapi").content


def test_an_enum_is_written_as_its_value_either_way() -> None:
    items = [{"x": _Colour.RED}]
    with _client(items) as http:
        assert http.get("/by-page").content == http.get("/by-fastapi").content == \
            b'{"items":[{"x":"red"}],"limit":7,"offset":3}'
