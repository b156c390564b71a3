"""Output-side explainer: decoding neurons' output directions through final norm and unembedding."""

from __future__ import annotations

import numpy as np
import pytest

from neurolabel.activations.models import load_target
from neurolabel.core.errors import ExplanationError, ModelError, ScoringError
from neurolabel.core.registry import EXPLAINERS, SIMULATORS
from neurolabel.core.types import ActivationRecord, Explanation, NeuronId, NeuronRecord
from neurolabel.explainers.output_tokens import (
    OutputTokensExplainer,
    agreement,
    decode_layer,
    describe,
)
from neurolabel.scoring.lexical_simulator import LexicalSimulator
from neurolabel.scoring.next_token_simulator import NextTokenSimulator
from tests.activations.tiny import tiny_bert_dir, tiny_gpt2_dir
from tests.explainers.tiny_output import TOKEN, planted_output_llama
from tests.explainers.tiny_output import token_id as _token_id

@pytest.fixture(scope="module")
def planted_llama(tmp_path_factory):
    return planted_output_llama(tmp_path_factory.mktemp("out"))


def test_llama_neuron_decodes_to_planted_token(planted_llama):
    d, tid = planted_llama
    target = load_target(str(d), device="cpu")
    dec = decode_layer(target, 1, top_k=5)
    assert dec.units.tolist() == list(range(40)) and dec.promoted_ids.shape == (40, 5)
    assert dec.promoted_ids[7, 0] == tid
    assert dec.suppressed_ids[8, 0] == tid
    assert dec.promoted_ids[8, 0] != tid
    assert np.all(np.diff(dec.promoted_weights, axis=1) <= 0)  # largest first
    assert np.all(np.diff(dec.suppressed_weights, axis=1) >= 0)  # most negative first
    # only some units, same answer
    some = decode_layer(target, 1, [8, 7], top_k=5)
    assert some.units.tolist() == [7, 8] and some.promoted_ids[0, 0] == tid


def test_explainer_text_and_structure(planted_llama):
    d, tid = planted_llama
    target = load_target(str(d), device="cpu")
    ex = OutputTokensExplainer(target, top_k=4, shown=3)
    rec = NeuronRecord(model=target.name, neuron=NeuronId(1, 7))
    [e] = ex.explain(rec)
    assert e.explainer == "output_tokens" and e.neuron == NeuronId(1, 7) and e.rank == 0
    assert e.text.startswith("promotes: dog") and " · suppresses: " in e.text
    assert [p["id"] for p in e.structured["promoted"]][0] == tid
    assert e.structured["promoted"][0]["token"] == TOKEN
    assert len(e.structured["promoted"]) == 4 and len(e.structured["suppressed"]) == 4
    assert e.params == {"top_k": 4, "shown": 3}
    layer = ex.explain_layer(1)
    assert len(layer) == 40 and layer[7].text == e.text


def test_gpt2_row_decodes_to_planted_token(tmp_path):
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    d = tiny_gpt2_dir(tmp_path)
    m = GPT2LMHeadModel.from_pretrained(d)
    tid = _token_id(AutoTokenizer.from_pretrained(d))
    with torch.no_grad():
        m.transformer.wte.weight[tid] *= 30.0  # tied: also the unembedding
        m.transformer.h[2].mlp.c_proj.weight[5] = m.transformer.wte.weight[tid]
    m.save_pretrained(d)
    target = load_target(str(d), device="cpu")
    dec = decode_layer(target, 2, top_k=3)
    assert dec.promoted_ids.shape == (128, 3) and dec.promoted_ids[5, 0] == tid


def test_encoder_is_refused_with_its_architecture(tmp_path):
    target = load_target(str(tiny_bert_dir(tmp_path)), device="cpu")
    with pytest.raises(ModelError, match="architecture 'bert'.*supported: gemma.*gpt2.*llama"):
        decode_layer(target, 0)
    with pytest.raises(ExplanationError, match="architecture 'bert'"):
        OutputTokensExplainer(target).explain(NeuronRecord(model=target.name, neuron=NeuronId(0, 1)))


def test_bad_layer_unit_and_model(planted_llama):
    d, _ = planted_llama
    target = load_target(str(d), device="cpu")
    with pytest.raises(ModelError, match=r"layer\(s\) \[2\] do not exist"):
        decode_layer(target, 2)
    with pytest.raises(ModelError, match=r"unit\(s\) \[40\] do not exist"):
        decode_layer(target, 0, [40])
    with pytest.raises(ExplanationError, match="record of neuron 0:1 is of model 'other'"):
        OutputTokensExplainer(target).explain(NeuronRecord(model="other", neuron=NeuronId(0, 1)))
    with pytest.raises(ExplanationError, match="has no model"):
        OutputTokensExplainer().explain(NeuronRecord(model="x", neuron=NeuronId(0, 1)))


def test_describe_deduplicates_and_shows_whitespace():
    assert describe([" dog", "dog", " dogs", "\n"], [" cat"], shown=3) == "promotes: dog, dogs, '\\n' · suppresses: cat"


def _out(promoted: list[tuple[str, float]]) -> Explanation:
    return Explanation(model="m", neuron=NeuronId(0, 0), explainer="output_tokens", explainer_version="1",
                       text="promotes", structured={"promoted": [{"id": i, "token": t, "weight": w}
                                                                 for i, (t, w) in enumerate(promoted)]})


def test_agreement_is_the_promoted_weight_inside_the_label():
    out = _out([(" dog", 3.0), (" cat", 2.0), (" dogs", 1.0), (" the", 0.5)])
    label = Explanation(model="m", neuron=NeuronId(0, 0), explainer="pmi", explainer_version="1", text="dog")
    r = agreement(out, label, LexicalSimulator())
    assert r.score is None and r.scorer == "agreement" and r.simulator == "lexical"
    assert r.parts["agreement"] == pytest.approx(4.0 / 6.5)
    assert r.parts["top_token_inside"] == 1.0 and r.parts["n_inside"] == 2.0 and r.parts["n_promoted"] == 4.0
    cat = Explanation(model="m", neuron=NeuronId(0, 0), explainer="pmi", explainer_version="1", text="cat")
    r2 = agreement(out, cat, LexicalSimulator())
    assert r2.parts["agreement"] == pytest.approx(2.0 / 6.5) and r2.parts["top_token_inside"] == 0.0
    with pytest.raises(ExplanationError, match="no promoted tokens"):
        agreement(_out([]), label, LexicalSimulator())


def test_next_token_simulator_reads_the_following_token():
    sim = NextTokenSimulator()
    out = _out([(" dog", 4.0), (" Cat", 2.0), (" fish", -1.0)])
    got = sim.simulate(out, ["The", " dog", " saw", " a", " cat", " fish"]).expected_activations
    assert got == (1.0, 0.0, 0.0, 0.5, 0.0, 0.0)  # fish has a negative weight: not promoted
    assert sim.applies(out) and not sim.applies(_out([]))
    with pytest.raises(ScoringError, match="lists no promoted tokens"):
        sim.simulate(_out([]), ["a"])
    assert "next_token" in SIMULATORS and EXPLAINERS["output_tokens"].default_simulator == "next_token"


@pytest.mark.slow
def test_real_smollm2_layer0_matches_a_direct_product():
    target = load_target("default", device="cpu")
    dec = decode_layer(target, 0, top_k=8)
    assert dec.promoted_ids.shape == (1536, 8)
    base = target.model
    U = (base.embed_tokens.weight * base.norm.weight).detach().numpy().astype(np.float64)
    W = base.layers[0].mlp.down_proj.weight.detach().numpy().astype(np.float64)
    rng = np.random.default_rng(0)
    for unit in rng.choice(1536, size=6, replace=False):
        logits = U @ W[:, unit]
        order = np.argsort(-logits)[:8]
        assert dec.promoted_ids[unit].tolist() == order.tolist()
        np.testing.assert_allclose(dec.promoted_weights[unit], logits[order], rtol=1e-4, atol=1e-5)
        low = np.argsort(logits)[:8]
        assert dec.suppressed_ids[unit].tolist() == low.tolist()
