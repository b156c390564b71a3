"""A local transformers chat model (default: SmolLM2-135M-Instruct) as a chat backend.

Generation is batched (left padding; ``n`` samples are rows of one batch) and runs in a
worker thread under a lock, so the async interface never blocks the event loop and the
model is never used by two threads at once. :meth:`LocalBackend.next_token_logprobs` gives
the validator direct access to next-token log-probabilities of one forward pass;
:meth:`LocalBackend.prompt_logprobs` scores a text's own tokens (offsets, log-probabilities and
top alternatives at every position, one forward pass), as an endpoint's Completions API does
with ``echo`` and ``logprobs``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from neurolabel.core.errors import LMError, ModelError
from neurolabel.lm.base import ChatChoice, Message, PromptToken, TokenLogprob, normalise_messages

log = logging.getLogger(__name__)

_LOCKS: dict[int, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def resolve_device(device: str = "auto") -> str:
    """``auto`` → the settings' device, then ``cuda`` when available, else ``cpu``."""
    import torch

    if device == "auto":
        from neurolabel.core.settings import get_settings

        device = get_settings().device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _model_lock(model: Any) -> threading.Lock:
    """One lock per model object, shared by every backend wrapping it."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(id(model), threading.Lock())


class LocalBackend:
    """Chat backend over a Hugging Face causal LM and its tokenizer (with a chat template)."""

    supports_logits = True
    """Its ``model``, ``tokenizer`` and :meth:`next_token_logprobs` may be used directly."""
    supports_prompt_logprobs = True
    """:meth:`prompt_logprobs` is served."""

    def __init__(
        self, model: Any, tokenizer: Any, *, device: str = "cpu", name: str = "local", seed: int | None = 0
    ) -> None:
        self.model = model
        """The ``transformers`` causal LM (eval mode)."""
        self.tokenizer = tokenizer
        """Its tokenizer (chat template included)."""
        self.device = device
        """Torch device the model lives on."""
        self.name = name
        """Identity used in cache keys, e.g. ``local:smollm2-135m``."""
        self.seed = seed
        """Seed set before each sampled generation (``None``: do not seed)."""

    # ------------------------------------------------------------------ factory
    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "auto", *, seed: int | None = 0) -> "LocalBackend":
        """Load a model folder (default: SmolLM2-135M-Instruct from :func:`core.assets.smollm2_dir`)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from neurolabel.core.assets import SMOLLM2_NAME, smollm2_dir

        folder = Path(path) if path is not None else smollm2_dir()
        name = f"local:{SMOLLM2_NAME}" if path is None else f"local:{folder.name}"
        dev = resolve_device(device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{folder}: cannot load a chat model: {exc}") from exc
        if getattr(tokenizer, "chat_template", None) is None:
            raise ModelError(f"{folder}: the tokenizer has no chat template")
        model.to(dev).eval()
        log.info("loaded local chat model %s on %s", folder, dev)
        return cls(model, tokenizer, device=dev, name=name, seed=seed)

    # ------------------------------------------------------------------ helpers
    @property
    def _lock(self) -> threading.Lock:
        return _model_lock(self.model)

    def stop_token_ids(self) -> list[int]:
        """Token ids that end an answer (``<|im_end|>``, eos, ``<|endoftext|>`` when present)."""
        tok = self.tokenizer
        ids: list[int] = []
        for t in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>"):
            i = tok.convert_tokens_to_ids(t)
            if isinstance(i, int) and i != tok.unk_token_id and i >= 0:
                ids.append(i)
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        for i in gen_eos if isinstance(gen_eos, list) else [gen_eos]:
            if isinstance(i, int):
                ids.append(i)
        if not ids and tok.eos_token_id is not None:
            ids.append(tok.eos_token_id)
        return sorted(set(ids))

    def _pad_id(self) -> int:
        tok = self.tokenizer
        if tok.pad_token_id is not None:
            return int(tok.pad_token_id)
        return self.stop_token_ids()[0]

    def _left_pad(self, seqs: Sequence[Sequence[int]]) -> dict[str, Any]:
        """Left-padded ``input_ids``/``attention_mask`` tensors (without touching the tokenizer)."""
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self._pad_id(), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            if s:
                ids[i, width - len(s) :] = torch.tensor(list(s), dtype=torch.long)
                mask[i, width - len(s) :] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def apply_chat_template(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        """The prompt text the model sees for ``messages``."""
        return self.tokenizer.apply_chat_template(
            normalise_messages(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def encode_chat(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> list[int]:
        """Token ids of the chat prompt for ``messages``."""
        text = self.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def token_text(self, token_id: int) -> str:
        """One token decoded as text (spaces kept)."""
        return self.tokenizer.decode([int(token_id)], clean_up_tokenization_spaces=False)

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        conversations: Sequence[Sequence[Message]],
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_tokens: int = 256,
        logprobs: bool = False,
        top_logprobs: int = 0,
    ) -> list[list[ChatChoice]]:
        """Blocking, batched generation: ``n`` choices for each conversation (one batch)."""
        import torch

        if n < 1 or max_tokens < 1 or temperature < 0 or not 0 <= top_logprobs <= 20:
            raise LMError(
                f"{self.name}: bad request (n={n}, max_tokens={max_tokens}, "
                f"temperature={temperature}, top_logprobs={top_logprobs})"
            )
        prompts = [self.apply_chat_template(c) for c in conversations]
        tok = self.tokenizer
        enc = self._left_pad([tok(p, add_special_tokens=False)["input_ids"] for p in prompts])
        enc = {k: v.to(self.device) for k, v in enc.items()}
        stops = self.stop_token_ids()
        sample = temperature > 0
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max_tokens,
            num_return_sequences=n,
            do_sample=sample,
            eos_token_id=stops,
            pad_token_id=self._pad_id(),
            return_dict_in_generate=True,
            output_logits=logprobs,
        )
        if sample:
            kwargs.update(temperature=temperature, top_k=0, top_p=1.0)
        else:
            kwargs.update(temperature=None, top_k=None, top_p=None)
        with self._lock, torch.inference_mode():
            if sample and self.seed is not None:
                torch.manual_seed(self.seed)
            if n > 1 and enc["input_ids"].shape[1] > 1:
                enc, kwargs = self._shared_prefill(enc, kwargs, n)
            out = self.model.generate(**enc, **kwargs)
        prompt_len = enc["input_ids"].shape[1]
        gen = out.sequences[:, prompt_len:].cpu()
        step_lp = None
        if logprobs and out.logits:
            # (rows, steps, vocab) would be large: keep only what is asked per step
            chosen, top_ids, top_vals = [], [], []
            for step, logits in enumerate(out.logits):
                lp = torch.log_softmax(logits.float(), dim=-1).cpu()
                ids = gen[:, step : step + 1]
                chosen.append(lp.gather(1, ids).squeeze(1))
                if top_logprobs:
                    v, i = lp.topk(top_logprobs, dim=-1)
                    top_vals.append(v)
                    top_ids.append(i)
            step_lp = (
                torch.stack(chosen, 1),
                torch.stack(top_ids, 1) if top_ids else None,
                torch.stack(top_vals, 1) if top_vals else None,
            )
        stop_set = set(stops)
        results: list[list[ChatChoice]] = []
        for c in range(len(conversations)):
            choices = []
            for j in range(n):
                row = c * n + j
                ids = gen[row].tolist()
                end = next((k for k, t in enumerate(ids) if t in stop_set), None)
                finish = "stop" if end is not None else "length"
                ids = ids[: end if end is not None else len(ids)]
                text = tok.decode(ids, skip_special_tokens=True)
                tokens: tuple[TokenLogprob, ...] = ()
                if step_lp is not None:
                    chosen_lp, t_ids, t_vals = step_lp
                    tokens = tuple(
                        TokenLogprob(
                            token=self.token_text(t),
                            logprob=float(chosen_lp[row, k]),
                            top_logprobs=tuple(
                                (self.token_text(int(i)), float(v))
                                for i, v in zip(t_ids[row, k].tolist(), t_vals[row, k].tolist())
                            )
                            if t_ids is not None
                            else (),
                        )
                        for k, t in enumerate(ids)
                    )
                choices.append(ChatChoice(text=text.strip(), tokens=tokens, finish_reason=finish))
            results.append(choices)
        return results

    def _shared_prefill(self, enc: dict[str, Any], kwargs: dict[str, Any], n: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Run the prompts once and repeat the key/value cache ``n`` times, instead of letting
        ``generate`` prefill every sample's copy of the prompt (the prompt dominates the cost)."""
        ids, mask = enc["input_ids"], enc["attention_mask"]
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
        pre = self.model(
            input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1], use_cache=True
        )
        cache = pre.past_key_values
        cache.batch_repeat_interleave(n)
        enc = {
            "input_ids": ids.repeat_interleave(n, 0),
            "attention_mask": mask.repeat_interleave(n, 0),
            "past_key_values": cache,
        }
        return enc, {**kwargs, "num_return_sequences": 1}

    async def chat(
        self,
        messages: Sequence[Message],
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_tokens: int = 256,
        logprobs: bool = False,
        top_logprobs: int = 0,
    ) -> list[ChatChoice]:
        """``n`` answers to ``messages`` (generation runs in a worker thread)."""
        res = await asyncio.to_thread(
            self.generate,
            [messages],
            n=n,
            temperature=temperature,
            max_tokens=max_tokens,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
        )
        return res[0]

    # ------------------------------------------------------------------ scoring access
    def _ids_and_offsets(self, text: str) -> tuple[list[int], list[int]]:
        """Token ids of ``text`` (no special tokens added) and each token's start offset in it."""
        tok = self.tokenizer
        if getattr(tok, "is_fast", False):
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
            return list(enc["input_ids"]), [int(a) for a, _ in enc["offset_mapping"]]
        ids = list(tok(text, add_special_tokens=False)["input_ids"])  # slow tokenizer: offsets by decoding
        return ids, [len(tok.decode(ids[:i], clean_up_tokenization_spaces=False)) for i in range(len(ids))]

    def score_text(self, text: str, *, top_logprobs: int = 5) -> list[PromptToken]:
        """Blocking :meth:`prompt_logprobs`: one forward pass over ``text``."""
        import torch

        vocab = int(self.model.get_output_embeddings().weight.shape[0])
        if not text:
            raise LMError(f"{self.name}: empty prompt")
        if not 0 <= top_logprobs <= vocab:
            raise LMError(f"{self.name}: top_logprobs must be 0..{vocab}, got {top_logprobs}")
        ids, offsets = self._ids_and_offsets(text)
        if not ids:
            raise LMError(f"{self.name}: the prompt has no tokens")
        with self._lock, torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([ids], device=self.device)).logits[0]
            lp = torch.log_softmax(logits[:-1].float(), dim=-1)  # row r: the distribution of token r + 1
            chosen = lp.gather(1, torch.tensor(ids[1:], device=lp.device).unsqueeze(1)).squeeze(1).cpu().tolist()
            top_v, top_i = (lp.topk(top_logprobs, dim=-1) if top_logprobs else (lp[:, :0], lp[:, :0].long()))
            top_v, top_i = top_v.cpu().tolist(), top_i.cpu().tolist()
        texts: dict[int, str] = {}

        def _text(i: int) -> str:
            if i not in texts:
                texts[i] = self.token_text(i)
            return texts[i]

        out = [PromptToken(token=_text(ids[0]), offset=offsets[0], logprob=None)]
        for k in range(1, len(ids)):
            out.append(PromptToken(token=_text(ids[k]), offset=offsets[k], logprob=float(chosen[k - 1]),
                                   top_logprobs=tuple((_text(i), float(v)) for i, v in zip(top_i[k - 1], top_v[k - 1]))))
        return out

    async def prompt_logprobs(self, text: str, *, top_logprobs: int = 5) -> list[PromptToken]:
        """Every token of ``text`` with its offset, log-probability and the ``top_logprobs`` most
        likely tokens at its position (one forward pass, in a worker thread)."""
        return await asyncio.to_thread(self.score_text, text, top_logprobs=top_logprobs)

    def next_token_logprobs(
        self,
        sequences: Sequence[Sequence[int]],
        *,
        positions: Sequence[Sequence[int]] | None = None,
        candidate_ids: Sequence[int] | None = None,
        batch_size: int = 8,
    ) -> list[np.ndarray]:
        """Log-probabilities of the next token after every position, from one forward pass.

        ``sequences``: token-id lists. For each sequence returns a float32 array of shape
        ``(len(positions[i]) or len(seq), len(candidate_ids) or vocab)``: row ``r`` is
        ``log p(next token | seq[: pos + 1])`` for position ``pos``. Normalisation is over
        the full vocabulary even when only ``candidate_ids`` columns are returned.
        """
        import torch

        if positions is not None and len(positions) != len(sequences):
            raise ValueError(f"{len(positions)} position lists for {len(sequences)} sequences")
        cand = torch.tensor(list(candidate_ids), dtype=torch.long) if candidate_ids is not None else None
        out: list[np.ndarray] = []
        pad = self._pad_id()
        for b in range(0, len(sequences), batch_size):
            chunk = [list(map(int, s)) for s in sequences[b : b + batch_size]]
            if any(not s for s in chunk):
                raise ValueError("empty token sequence")
            width = max(len(s) for s in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, s in enumerate(chunk):  # right padding: causal attention ignores the tail
                ids[i, : len(s)] = torch.tensor(s)
                mask[i, : len(s)] = 1
            with self._lock, torch.inference_mode():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            for i, s in enumerate(chunk):
                pos = list(range(len(s))) if positions is None else list(positions[b + i])
                if any(p < 0 or p >= len(s) for p in pos):
                    raise ValueError(f"position out of range for a sequence of {len(s)} tokens")
                lp = torch.log_softmax(logits[i, pos].float(), dim=-1)
                if cand is not None:
                    lp = lp[:, cand.to(lp.device)]
                out.append(lp.cpu().numpy().astype(np.float32))
        return out
