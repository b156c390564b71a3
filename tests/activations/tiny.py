"""Tiny GPT-2, BERT and Llama models built from a config (random weights), saved to a folder."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

WORDS = ("the a cat dog sat ran on under mat tree happy sad big small and it was is of to in number "
         "one two three four five six seven eight nine ten fox jumps over lazy quick brown").split()


@lru_cache(maxsize=1)
def _smollm2_tokenizer():
    from transformers import AutoTokenizer

    from neurolabel.core.assets import smollm2_dir

    return AutoTokenizer.from_pretrained(smollm2_dir())


def tiny_gpt2_dir(root: Path) -> Path:
    """GPT-2: 3 layers, n_embd 32 (128 MLP units), SmolLM2's byte-level BPE tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    d = Path(root) / "tiny-gpt2"
    tok = _smollm2_tokenizer()
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=3, n_head=2)).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def tiny_llama_dir(root: Path) -> Path:
    """Llama: 2 layers, hidden 24, 40 MLP units, SmolLM2's tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    d = Path(root) / "tiny-llama"
    tok = _smollm2_tokenizer()
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=24, intermediate_size=40, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256)
                     ).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def tiny_bert_dir(root: Path) -> Path:
    """BERT: 2 layers, hidden 24, 48 MLP units, a WordPiece tokenizer over a small vocabulary."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    d = Path(root) / "tiny-bert"
    d.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz0123456789.,",
             *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789")]
    (d / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    tok = BertTokenizerFast(vocab_file=str(d / "vocab.txt"))
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=24, intermediate_size=48, num_hidden_layers=2,
                               num_attention_heads=2, max_position_embeddings=128)).save_pretrained(d)
    tok.save_pretrained(d)
    return d
