"""Loading target models: tiny GPT-2 / BERT / Llama folders, the default, and bad inputs."""

from __future__ import annotations

import pytest

from neurolabel.activations.models import UNIT_SPECS, check_units, load_target
from neurolabel.core.errors import ModelError


def test_tiny_gpt2(gpt2_dir):
    t = load_target(str(gpt2_dir))
    assert (t.architecture, t.n_layers, t.n_units) == ("gpt2", 3, 4 * 32)
    assert t.unit_map["module"] == "mlp.act" and t.unit_map["hook"] == "output"
    assert not t.model.training
    assert type(t.model).__name__ == "GPT2Model"  # base model, no LM head


def test_tiny_bert(bert_dir):
    t = load_target(str(bert_dir))
    assert (t.architecture, t.n_layers, t.n_units) == ("bert", 2, 48)
    assert t.prefix_ids == (t.tokenizer.cls_token_id,)
    assert type(t.model).__name__ == "BertModel"


def test_tiny_llama(llama_dir):
    t = load_target(str(llama_dir))
    assert (t.architecture, t.n_layers, t.n_units) == ("llama", 2, 40)
    assert t.unit_map["module"] == "mlp.down_proj" and t.unit_map["hook"] == "input"


def test_missing_path():
    with pytest.raises(ModelError, match="'/no/such/model' does not exist"):
        load_target("/no/such/model")


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        load_target(str(tmp_path))


def test_unknown_architecture_lists_known(tmp_path):
    from transformers import GPTNeoXConfig

    GPTNeoXConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                  vocab_size=100).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="'gpt_neox'.*no units map; known: bert, .*gpt2.*llama"):
        load_target(str(tmp_path))
    assert {"llama", "gpt2", "bert", "mistral"} <= set(UNIT_SPECS)


def test_unknown_layer_and_unit(gpt2_dir):
    t = load_target(str(gpt2_dir))
    with pytest.raises(ModelError, match=r"layer\(s\) \[3\] do not exist in .*layers 0-2"):
        t.unit_module(3)
    with pytest.raises(ModelError, match=r"unit\(s\) \[128\] do not exist.*units 0-127"):
        check_units(t, [0, 128])


@pytest.mark.slow
def test_default_model():
    t = load_target("default")
    assert t.name == "smollm2-135m"
    assert (t.architecture, t.n_layers, t.n_units) == ("llama", 30, 1536)
    assert t.prefix_ids == (1,)  # the tokenizer's BOS
    assert type(t.model).__name__ == "LlamaModel"


@pytest.mark.parametrize("which", ["gpt2_dir", "bert_dir", "llama_dir", "default"])
def test_describe_target_reads_what_load_target_gives_without_weights(which, request, tmp_path):
    """``describe_target`` (a Ray run's driver) gives the name, source, architecture, layer and unit
    counts and units map that ``load_target`` gives, from the config alone: a folder whose weights
    are gone is still described (and cannot be loaded), and bad folders fail alike."""
    import shutil

    from neurolabel.activations.models import describe_target

    spec = "default" if which == "default" else str(request.getfixturevalue(which))
    t, d = load_target(spec), describe_target(spec)
    assert (d.name, d.source, d.architecture, d.n_layers, d.n_units, d.unit_map) == (
        t.name, t.source, t.architecture, t.n_layers, t.n_units, t.unit_map)
    if which != "default":  # the same folder without its weights: described, not loadable
        bare = tmp_path / "bare"
        shutil.copytree(spec, bare, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
        bare_d = describe_target(str(bare))
        assert (bare_d.n_layers, bare_d.n_units, bare_d.unit_map) == (d.n_layers, d.n_units, d.unit_map)
        with pytest.raises(ModelError):
            load_target(str(bare))
        with pytest.raises(ModelError, match=r"layer\(s\) \[99\] do not exist"):
            from neurolabel.activations.models import check_layers

            check_layers(bare_d, [99])
    with pytest.raises(ModelError, match="does not exist"):
        describe_target("/no/such/model")
    with pytest.raises(ModelError, match="no config.json"):
        describe_target(str(tmp_path))
