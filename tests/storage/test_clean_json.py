"""The store's JSON cleaning: the fast walk copies plain values as the general walk does, and
everything else (NumPy scalars, sets, non-finite floats) goes through the general walk, with its
errors naming the place."""

from __future__ import annotations

import math

import numpy as np
import pytest

from neurolabel.core.errors import StorageError
from neurolabel.storage.writes import _clean_fast, _clean_json, _clean_slow, _Unclean

PLAIN = {
    "manchester": "A or (follows some B)",
    "weights": [0.5, 1.25, -3.0],
    "kinds": [["Preposition", 0.3], ("Digit", -0.1)],
    "nested": {"a": {"b": [1, 2, {"c": None}]}, 3: True, None: "x", 1.5: False},
    "n": 7,
    "f64": np.float64(0.25),
    "empty": {},
    "tuple": (1, "two", 3.0),
}


def test_fast_walk_copies_plain_values_as_the_general_walk() -> None:
    fast = _clean_fast(PLAIN)
    assert fast == _clean_slow(PLAIN, "x")
    assert type(fast["f64"]) is float and type(fast["tuple"]) is list
    assert fast["nested"]["3"] is True and "None" in fast["nested"] and "1.5" in fast["nested"]


@pytest.mark.parametrize("value", [
    {"a": np.float32(0.5)}, {"a": np.int64(3)}, {"a": {3, 1, 2}}, {"a": frozenset({"x"})}, [__import__("collections").OrderedDict(a=1)],
])
def test_other_types_go_through_the_general_walk(value) -> None:
    with pytest.raises(_Unclean):
        _clean_fast(value)
    assert _clean_json(value, "here") == _clean_slow(value, "here")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, np.float64("nan")])
def test_non_finite_floats_are_refused_with_their_place(bad) -> None:
    value = {"weights": [0.1, {"deep": [1.0, bad]}]}
    with pytest.raises(StorageError, match=r"structured\.weights\[1\]\.deep\[1\]: value .* is not finite"):
        _clean_json(value, "structured")


def test_unstorable_values_are_refused_with_their_place() -> None:
    with pytest.raises(StorageError, match=r"params\.x: object value"):
        _clean_json({"x": object()}, "params")
