"""Tiny Llama models with planted units, built by the tests (random weights otherwise).

Residual dimension 0 is reserved for a marker token: only the marker's embedding has a
non-zero value there, and no attention output or MLP writes to it. Unit ``PLANTED`` of layer 0
reads only that dimension through both its gate and its up projection, so it is exactly 0 on
every other token and positive on the marker. Unit ``DEAD`` of the last layer has a zero
``down_proj`` column: it feeds nothing. Unit ``PUSH`` of the last layer writes along the
output embedding of the marker: clamping it high makes the model predict the marker.
"""

from __future__ import annotations

from pathlib import Path

MARKER = " zebra"
"""The marker word (one token in SmolLM2's tokenizer)."""
PLANTED = 7
"""The unit of layer 0 that fires only on the marker."""
DEAD = 3
"""A unit of the last layer whose output weights are zero."""
PUSH = 5
"""A unit of the last layer whose output is the marker's output embedding."""
N_UNITS = 40
N_LAYERS = 2


def planted_llama_dir(root: Path) -> Path:
    """Save the planted tiny Llama (SmolLM2's tokenizer) under ``root``; returns its folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.activations.tiny import _smollm2_tokenizer

    d = Path(root) / "planted-llama"
    tok = _smollm2_tokenizer()
    (marker,) = tok(MARKER, add_special_tokens=False)["input_ids"]
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=24, intermediate_size=N_UNITS,
                                         num_hidden_layers=N_LAYERS, num_attention_heads=2, num_key_value_heads=1,
                                         max_position_embeddings=256, tie_word_embeddings=False))
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb[:, 0] = 0.0
        emb[marker, 0] = 4.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0, :] = 0.0
            layer.mlp.down_proj.weight[0, :] = 0.0
        mlp0 = model.model.layers[0].mlp
        for proj in (mlp0.gate_proj, mlp0.up_proj):
            proj.weight[PLANTED, :] = 0.0
            proj.weight[PLANTED, 0] = 3.0
        last = model.model.layers[-1].mlp.down_proj.weight
        last[:, DEAD] = 0.0
        model.lm_head.weight[marker] *= 25.0  # a marker logit that can move by several nats
        push = model.lm_head.weight[marker].clone()
        push[0] = 0.0
        last[:, PUSH] = push / push.norm()
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d
