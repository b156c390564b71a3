"""Lexical simulator for word labels, and the pipeline's fallback to it."""

from __future__ import annotations

from neurolabel.core.registry import SIMULATORS
from neurolabel.core.types import Explanation, NeuronId
from neurolabel.scoring.lexical_simulator import fold, label_words


def _e(text, structured=None):
    return Explanation(model="m", neuron=NeuronId(0, 0), explainer="pmi", explainer_version="1", text=text,
                       structured=structured or {})


def test_fold_and_words():
    assert [fold(w) for w in ["Dogs", "boxes", "cities", "glass", "bus", "churches"]] == [
        "dog", "box", "city", "glass", "bus", "church"]
    assert label_words("the New York") == {"new", "york"}


def test_simulates_word_labels_only():
    sim = SIMULATORS["lexical"].from_defaults()
    assert sim.applies(_e("dogs")) and sim.applies(_e("ice cream"))
    assert not sim.applies(_e("words about animals that live on farms")) and not sim.applies(_e("the"))
    out = sim.simulate(_e("dog"), ["The", " dogs", " Dog", " barked", "."])
    assert out.expected_activations == (0.0, 1.0, 1.0, 0.0, 0.0) and out.method == "lexical"


def test_pipeline_falls_back_to_lexical_for_word_labels():
    from neurolabel.pipeline.plugins import build
    from neurolabel.pipeline.simulators import applies, fallback

    sym = build("simulator", "symbolic")
    assert not applies(sym, _e("dog"))  # a PMI word label has no class expression
    assert fallback(_e("dog"))[0] == "lexical"


def test_windows_at_once_predict_what_each_window_does():
    from neurolabel.scoring.scorers import FlatSimulations

    sim = SIMULATORS["lexical"].from_defaults()
    windows = [["The", " dogs", " Dog's", " barked"], [], ["Hot-dogs", " boxes", " dog"]]
    many = sim.simulate_many(_e("dog box"), windows)
    assert isinstance(many, FlatSimulations) and len(many) == 3
    assert list(many) == [sim.simulate(_e("dog box"), w) for w in windows]
    assert [s.expected_activations for s in many] == [(0.0, 1.0, 0.0, 0.0), (), (0.0, 1.0, 1.0)]
