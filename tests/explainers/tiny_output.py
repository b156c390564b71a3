"""A tiny Llama whose neuron output directions are planted on chosen tokens' unembeddings."""

from __future__ import annotations

from pathlib import Path

from tests.activations.tiny import tiny_llama_dir

TOKEN = " dog"
"""The planted token."""


def token_id(tokenizer, text: str = TOKEN) -> int:
    """Id of a one-token text."""
    [tid] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return int(tid)


def planted_output_llama(root: Path) -> tuple[Path, int]:
    """Tiny untied Llama (2 layers × 40 units): neuron 7 of layer 1 writes the unembedding
    direction of " dog" (made the longest row, so it is that token's own top logit), neuron 8
    writes its opposite; the final norm's scale is 2 (not 1), so a decoder that forgets the scale
    or applies it twice still ranks correctly only by luck. Returns (folder, token id)."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    d = tiny_llama_dir(root)
    m = LlamaForCausalLM.from_pretrained(d)
    tid = token_id(AutoTokenizer.from_pretrained(d))
    with torch.no_grad():
        m.lm_head.weight[tid] *= 30.0
        m.model.norm.weight.fill_(2.0)
        u = m.lm_head.weight[tid] / 2.0
        m.model.layers[1].mlp.down_proj.weight[:, 7] = u
        m.model.layers[1].mlp.down_proj.weight[:, 8] = -u
    assert not m.config.tie_word_embeddings  # lm_head is read from the safetensors file
    m.save_pretrained(d)
    return d, tid
