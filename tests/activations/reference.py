"""Independent reference for the tests: windows and unit activations computed with plain
transformers and hand-written MLP math — no neurolabel code.

The unit tensors are rebuilt from the *input of each MLP* (captured with a fresh hook on a
different module than neurolabel hooks) and the MLP's own weights:

- Llama: y = output of ``post_attention_layernorm``; unit = silu(y Wg^T) * (y Wu^T)
- GPT-2: y = output of ``ln_2``; unit = gelu_new(y W_fc + b_fc)
- BERT: y = output of ``attention`` (first element); unit = gelu(y W^T + b)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def reference_windows(tokenizer, texts, window_tokens):
    """Pack the texts (no special tokens, separator [SEP] or the newline token) and cut them."""
    sep = tokenizer.sep_token_id
    if sep is None:
        sep = tokenizer("\n", add_special_tokens=False)["input_ids"][0]
    stream = []
    for t in texts:
        ids = tokenizer(t, add_special_tokens=False)["input_ids"]
        if stream:
            stream.append(sep)
        stream.extend(ids)
    n = len(stream) // window_tokens
    return [stream[i * window_tokens:(i + 1) * window_tokens] for i in range(n)]


def reference_prefix(tokenizer):
    """The one special token the tokenizers used here put before a text (BOS or [CLS])."""
    full = tokenizer("dog")["input_ids"]
    plain = tokenizer("dog", add_special_tokens=False)["input_ids"]
    assert full[1:1 + len(plain)] == plain
    return full[:1]


def _gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def reference_acts(model, arch, windows, prefix, layers):
    """``{layer: tensor [n_windows, T, units]}`` from one plain forward pass."""
    base = model.base_model
    captured = {}
    handles = []
    for layer in layers:
        if arch == "llama":
            mod = base.layers[layer].post_attention_layernorm
        elif arch == "gpt2":
            mod = base.h[layer].ln_2
        else:
            mod = base.encoder.layer[layer].attention

        def hook(m, args, out, layer=layer):
            captured[layer] = out[0] if isinstance(out, tuple) else out

        handles.append(mod.register_forward_hook(hook))
    ids = torch.tensor([list(prefix) + list(w) for w in windows])
    try:
        with torch.no_grad():
            model(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    out = {}
    p = len(prefix)
    with torch.no_grad():
        for layer in layers:
            y = captured[layer][:, p:, :]
            if arch == "llama":
                mlp = base.layers[layer].mlp
                out[layer] = F.silu(y @ mlp.gate_proj.weight.T) * (y @ mlp.up_proj.weight.T)
            elif arch == "gpt2":
                fc = base.h[layer].mlp.c_fc  # Conv1D: weight [in, out]
                out[layer] = _gelu_new(y @ fc.weight + fc.bias)
            else:
                dense = base.encoder.layer[layer].intermediate.dense
                out[layer] = F.gelu(y @ dense.weight.T + dense.bias)
    return out
