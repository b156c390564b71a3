from dataclasses import FrozenInstanceError, replace

import pytest

from neurolabel.core import ActivationRecord, Explanation, NeuronId, NeuronRecord, split_of_window
from neurolabel.core.errors import ConfigError
from neurolabel.core.registry import Registry


def test_record_lengths_must_match():
    with pytest.raises(ValueError, match="2 tokens but 1 activations"):
        ActivationRecord(tokens=("a", "b"), activations=(1.0,))


def test_record_rejects_nan():
    with pytest.raises(ValueError, match="non-finite"):
        ActivationRecord(tokens=("a",), activations=(float("nan"),))


def test_types_are_frozen():
    n = NeuronId(1, 2)
    with pytest.raises(FrozenInstanceError):
        n.layer = 3  # type: ignore[misc]
    e = Explanation(model="m", neuron=n, explainer="x", explainer_version="1", text="dogs")
    e2 = replace(e, text="cats")
    assert e.text == "dogs" and e2.text == "cats"


def test_split_is_deterministic_and_balanced():
    splits = [split_of_window(i) for i in range(10_000)]
    assert splits == [split_of_window(i) for i in range(10_000)]
    frac = splits.count("score") / len(splits)
    assert 0.45 < frac < 0.55


def test_windows_by_split():
    recs = tuple(
        ActivationRecord(tokens=("a",), activations=(float(i),), window_id=i, split=split_of_window(i))
        for i in range(20)
    )
    nr = NeuronRecord(model="m", neuron=NeuronId(0, 0), top=recs)
    ex, sc = nr.windows("top", "explain"), nr.windows("top", "score")
    assert len(ex) + len(sc) == 20
    assert not {r.window_id for r in ex} & {r.window_id for r in sc}
    assert nr.max_activation == 19.0


def test_registry_unknown_tag_lists_known():
    reg: Registry = Registry("things")

    @reg.register("alpha")
    class Alpha:
        pass

    assert reg["alpha"] is Alpha
    with pytest.raises(ConfigError, match="unknown thing 'beta'; known: alpha"):
        reg["beta"]


def test_record_rejects_infinities_and_keeps_huge_finite_values():
    for bad in (float("inf"), float("-inf")):
        with pytest.raises(ValueError, match="non-finite"):
            ActivationRecord(tokens=("a", "b"), activations=(1.0, bad))
    with pytest.raises(ValueError, match=r"non-finite activation \(inf\)"):  # inf + -inf: nan; the first named
        ActivationRecord(tokens=("a", "b", "c"), activations=(1.0, float("inf"), float("-inf")))
    big = ActivationRecord(tokens=("a", "b"), activations=(1e308, 1e308))  # the sum overflows, each is finite
    assert big.activations == (1e308, 1e308)
