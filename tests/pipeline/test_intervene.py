"""Interventions on planted units of a tiny Llama, and on tiny GPT-2 and BERT models."""

from __future__ import annotations

import pytest
import torch

from neurolabel.core.errors import ConfigError, ModelError, ScoringError
from neurolabel.core.registry import SCORERS
from neurolabel.core.types import Explanation, NeuronId
from neurolabel.pipeline.causal import base_run, causal_score, label_words
from neurolabel.pipeline.intervene import (
    Intervention,
    compare,
    intervening,
    load_lm,
    log_probs,
    prompt_ids,
)
from tests.pipeline.planted import DEAD, MARKER, PLANTED, PUSH

PROMPTS = ["the cat sat on the", "a quick brown fox jumps over"]


def _logits(lm, prompt: str) -> torch.Tensor:
    ids = torch.tensor([prompt_ids(lm, prompt)])
    with torch.inference_mode():
        return lm.head_model(input_ids=ids).logits[0, -1].clone()


def test_clamping_raises_the_logit_by_the_computed_amount(planted_lm):
    lm = planted_lm
    tok = lm.target.tokenizer
    (marker,) = tok(MARKER, add_special_tokens=False)["input_ids"]
    layer = lm.head_model.model.layers[-1]
    grabbed = {}
    h1 = lm.head_model.model.norm.register_forward_pre_hook(lambda m, args: grabbed.__setitem__("h", args[0][0, -1].clone()))
    h2 = layer.mlp.down_proj.register_forward_pre_hook(lambda m, args: grabbed.__setitem__("u", args[0][0, -1].clone()))
    try:
        before = _logits(lm, PROMPTS[0])
    finally:
        h1.remove()
        h2.remove()
    value = 30.0
    with intervening(lm.target, Intervention(NeuronId(1, PUSH), "clamp", value)):
        after = _logits(lm, PROMPTS[0])
    # computed by hand: the unit's output column moves the residual, then the final norm and the head
    delta = (value - grabbed["u"][PUSH]) * layer.mlp.down_proj.weight[:, PUSH]
    with torch.inference_mode():
        expected = lm.head_model.lm_head(lm.head_model.model.norm(grabbed["h"] + delta))
    shift = after[marker] - before[marker]
    assert shift.item() == pytest.approx((expected[marker] - before[marker]).item(), rel=1e-4, abs=1e-4)
    assert shift.item() > 1.0
    assert torch.allclose(after, expected, atol=1e-4)


def test_ablating_a_unit_that_feeds_nothing_changes_nothing(planted_lm):
    (effect,) = compare(planted_lm, PROMPTS[:1], Intervention(NeuronId(1, DEAD), "ablate"), generate_tokens=6)
    assert effect.kl == 0.0
    assert effect.before == effect.after
    assert all(p0 == p1 for _, p0, p1 in effect.moved)


def test_model_is_restored_after_an_error_inside_an_intervention(planted_lm):
    lm = planted_lm
    before = _logits(lm, PROMPTS[1])
    module = lm.target.unit_module(1)
    with pytest.raises(RuntimeError, match="boom"):
        with intervening(lm.target, Intervention(NeuronId(1, PUSH), "clamp", 50.0)):
            assert not torch.equal(_logits(lm, PROMPTS[1]), before)
            raise RuntimeError("boom")
    assert not module._forward_pre_hooks
    assert torch.equal(_logits(lm, PROMPTS[1]), before)


def test_active_positions_only(planted_lm):
    iv = Intervention(NeuronId(0, PLANTED), "scale", 5.0, where="active")
    quiet, loud = compare(planted_lm, ["the cat sat on the mat", f"the{MARKER} sat on the mat"], iv, generate_tokens=3)
    assert quiet.unit_max == 0.0 and quiet.kl == 0.0
    assert loud.unit_max > 0.0 and loud.kl > 0.0


def test_bad_interventions_are_refused(planted_lm):
    with pytest.raises(ModelError, match="unit"):
        compare(planted_lm, PROMPTS, Intervention(NeuronId(1, 999), "ablate"))
    with pytest.raises(ModelError, match="layer"):
        compare(planted_lm, PROMPTS, Intervention(NeuronId(7, 0), "ablate"))
    with pytest.raises(ConfigError, match="finite"):
        compare(planted_lm, PROMPTS, Intervention(NeuronId(1, 0), "clamp", float("nan")))
    with pytest.raises(ConfigError, match="no prompts"):
        compare(planted_lm, [], Intervention(NeuronId(1, 0), "ablate"))


def test_causal_score_prefers_the_label_the_unit_causes(planted_lm):
    base = base_run(planted_lm, PROMPTS, [NeuronId(1, PUSH)])

    def expl(text: str) -> Explanation:
        return Explanation(model="planted-llama", neuron=NeuronId(1, PUSH), explainer="pmi", explainer_version="1",
                           text=text, structured={"kind": "token", "description": text})

    right = causal_score(planted_lm, expl(MARKER.strip()), base=base, mode="clamp", value=8.0)
    wrong = causal_score(planted_lm, expl("piano"), base=base, mode="clamp", value=8.0)
    assert right.scorer == "intervention" and right.parts["target_shift"] > 1.0
    assert right.score > 1.0 > wrong.score
    with pytest.raises(ScoringError, match="names no word"):
        causal_score(planted_lm, Explanation(model="m", neuron=NeuronId(1, PUSH), explainer="llm_summary",
                                             explainer_version="1", text="the of and"), base=base)


def test_label_words_by_explanation_kind():
    n = NeuronId(0, 0)
    cls = Explanation(model="m", neuron=n, explainer="concept_induction", explainer_version="1", text="dogs",
                      structured={"labels": ["dog", "cat"], "iris": []})
    tok = Explanation(model="m", neuron=n, explainer="pmi", explainer_version="1", text=" zebra",
                      structured={"kind": "token", "description": " zebra"})
    free = Explanation(model="m", neuron=n, explainer="llm_summary", explainer_version="1",
                       text="mentions of medical symptoms and the hospital")
    assert label_words(cls) == ["dog", "cat"]
    assert label_words(tok) == ["zebra"]
    assert label_words(free) == ["medical", "symptoms", "hospital"]
    table = Explanation(model="m", neuron=n, explainer="tokens", explainer_version="1", text="fires on ' steal' 3",
                        structured={"tokens": [[" steal", 3.0, 12], [" rob", 2.0, 4], [" the", -1.0, 40]],
                                    "baseline": 0.1})
    assert label_words(table) == ["steal", "rob"]


def test_label_words_expand_classes_only_over_the_ontology_the_label_was_induced_over():
    """With an ontology at hand the label's classes bring their descendants' words, but only when
    the label was induced over that ontology (or says none): another version's classes may not be
    the ones it meant, so its stored class labels alone are used."""
    from dataclasses import replace

    from neurolabel.ontology.identity import content_hash
    from neurolabel.ontology.model import from_edges

    base = "http://example.org/o#"
    onto = from_edges(name="pets", source="test", iris=[base + "animal", base + "dog", base + "cat"],
                      labels=[("animal",), ("dog",), ("cat",)], parents=[[], [0], [0]])
    other = from_edges(name="pets", source="test", iris=[base + "animal", base + "dog", base + "horse"],
                       labels=[("animal",), ("dog",), ("horse",)], parents=[[], [0], [0]])
    n = NeuronId(0, 0)
    e = Explanation(model="m", neuron=n, explainer="concept_induction", explainer_version="1", text="animals",
                    structured={"labels": ["animal"], "iris": [base + "animal"]},
                    ontology="pets", ontology_hash=content_hash(onto))
    assert label_words(e, onto) == ["animal", "dog", "cat"]
    assert label_words(e, other) == ["animal"]  # another ontology of the same name: the stored labels only
    assert label_words(replace(e, ontology_hash=None), other) == ["animal", "dog", "horse"]


def test_intervention_scorer_is_registered_and_refuses_simulations():
    scorer = SCORERS["intervention"].from_defaults()
    assert len(scorer.prompts) >= 10
    with pytest.raises(ScoringError, match="intervenes on the model"):
        scorer.score([], [], simulator="x")


@pytest.mark.parametrize("arch", ["gpt2", "bert"])
def test_other_architectures(arch, tmp_path):
    from tests.activations.tiny import tiny_bert_dir, tiny_gpt2_dir

    lm = load_lm(str((tiny_gpt2_dir if arch == "gpt2" else tiny_bert_dir)(tmp_path)))
    prompt = "the cat [MASK] on the mat" if arch == "bert" else "the cat sat on the"
    if arch == "bert":
        assert lm.masked
        with pytest.raises(ConfigError, match=r"\[MASK\]"):
            prompt_ids(lm, "no mask here")
    ids = [prompt_ids(lm, prompt)]
    before = log_probs(lm, ids)[0]
    (same,) = compare(lm, [prompt], Intervention(NeuronId(1, 2), "scale", 1.0), generate_tokens=3)
    assert same.kl == pytest.approx(0.0, abs=1e-6) and same.before == same.after
    (changed,) = compare(lm, [prompt], Intervention(NeuronId(1, 2), "clamp", 50.0), generate_tokens=3)
    assert changed.kl > 0.0
    with pytest.raises(ValueError):
        with intervening(lm.target, Intervention(NeuronId(0, 1), "ablate")):
            raise ValueError("inside")
    assert torch.equal(log_probs(lm, ids)[0], before)
