"""LLM simulator, "all at once" as in OpenAI's neuron-explainer.

One prompt holds the explanation and the window's tokens, each followed by a tab and an
``unknown`` activation slot. The predicted activation at a slot is the expected value over
the next-token probabilities of the digit tokens ``"0"``…``"max"``, renormalised over those
digits.

**Scale.** OpenAI's prompts use 0–10. SmolLM2's tokenizer splits ``"10"`` into ``"1"`` ``"0"``,
so a slot could not hold 10 in one token; the scale is therefore 0–9 whenever ``"10"`` is not a
single token of the model's tokenizer (0–10 otherwise). Scores are correlations, so the
scale does not change them.

**Methods** (recorded in ``SequenceSimulation.method`` and the ``ScoreResult``):

- ``logits`` (local transformers backend): the prompt's token ids are assembled piece by
  piece, so every slot's position is known; one forward pass per window reads the
  distribution at all slots (the header — instructions, example, explanation — is run once
  per explanation and its key/value cache reused by every window) (:meth:`LLMSimulator.simulate_token_by_token` is the
  one-forward-pass-per-token reference; a test checks they agree).
- ``logprobs`` (OpenAI-compatible endpoint): **one request per window**. Chat completions
  cannot score prompt tokens, so the model writes the listing itself: the answer copies the
  window one token a line, in order, each token followed by a tab and its activation, as in
  OpenAI's all-at-once format; each number is written right after its own token and the ones
  before it, and the expected value at each number is read from the ``top_logprobs``
  alternatives that are digits (0 when none is). The prompt asks for a causal reading (the
  activation on a token depends only on it and the tokens before it); the window itself is in
  the user message, since a chat answer cannot copy tokens it was never shown — exact causal
  masking would need prompt logprobs, which chat endpoints do not return. An answer that is not
  a listing of the window's tokens is asked again for JSON (one more request).
- ``json`` (endpoint that returns no logprobs): one request per window asking for a JSON
  list of integers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from typing import Any, Sequence

import numpy as np

from neurolabel.core.errors import ScoringError
from neurolabel.core.registry import SIMULATORS
from neurolabel.core.text import show_token as _show
from neurolabel.core.types import Explanation, SequenceSimulation

log = logging.getLogger(__name__)

_HEADER = (
    "We're studying neurons in a neural network. Each neuron looks for some particular thing "
    "in a short document. Look at an explanation of what the neuron does, and try to predict "
    "its activations on each token.\n\n"
    "The activation format is token<tab>activation, activations go from 0 to {max}, \"unknown\" "
    "indicates an unknown activation. Most activations will be 0.\n\n"
    "Neuron 1\n"
    "Explanation of neuron 1 behavior: the main thing this neuron does is find animals.\n"
    "Activations:\n<start>\n"
    "The\t0\n big\t0\n dog\t{max}\n chased\t0\n the\t0\n cat\t{high}\n.\t0\n"
    "<end>\n<start>\n"
    "A\t0\n horse\t{max}\n ate\t0\n green\t0\n grass\t0\n"
    "<end>\n\n"
    "Neuron 2\n"
    "Explanation of neuron 2 behavior: the main thing this neuron does is find"
)



def _expected(values: Sequence[int], logprobs: Sequence[float]) -> tuple[float, tuple[float, ...]]:
    """Expected value and distribution over ``values`` renormalised from their log-probs."""
    lp = np.asarray(logprobs, dtype=np.float64)
    if lp.size == 0 or not np.isfinite(lp).any():
        return 0.0, tuple(0.0 for _ in values)
    p = np.exp(lp - lp[np.isfinite(lp)].max())
    p[~np.isfinite(p)] = 0.0
    p /= p.sum()
    return float(p @ np.asarray(values, dtype=np.float64)), tuple(float(x) for x in p)


@SIMULATORS.register("llm")
class LLMSimulator:
    """All-at-once LLM simulator over a chat backend (see the module docstring)."""

    kind = "llm"

    def __init__(self, backend: Any, *, max_value: int | None = None, batch_size: int = 4,
                 top_logprobs: int = 20) -> None:
        self.backend = backend
        self.max_value = max_value
        self.batch_size = batch_size
        self.top_logprobs = top_logprobs
        self.forward_passes = 0
        """Forward passes (local) or requests (endpoint) made so far, for benchmarks."""
        self._json_only = False

    @classmethod
    def from_defaults(cls, **kwargs: Any) -> "LLMSimulator":
        """Over the configured backend (``lm.factory.backend_from_settings``: endpoint or local SmolLM2)."""
        from neurolabel.lm.factory import backend_from_settings

        return cls(backend_from_settings(), **kwargs)

    # ------------------------------------------------------------------ shared
    @property
    def _local(self) -> bool:
        return hasattr(self.backend, "next_token_logprobs") and hasattr(self.backend, "tokenizer")

    def _scale(self) -> int:
        if self.max_value is not None:
            return self.max_value
        if self._local:
            ids = self.backend.tokenizer.encode("10", add_special_tokens=False)
            self.max_value = 10 if len(ids) == 1 else 9
        else:
            self.max_value = 10
        return self.max_value

    def _header(self, explanation: Explanation) -> str:
        m = self._scale()
        return _HEADER.format(max=m, high=round(0.7 * m)) + " " + explanation.text.strip() + "\nActivations:\n<start>\n"

    def simulate(self, explanation: Explanation, tokens: Sequence[str]) -> SequenceSimulation:
        """Predicted activation of every token of one window."""
        return self.simulate_many(explanation, [tokens])[0]

    def simulate_many(self, explanation: Explanation, windows: Sequence[Sequence[str]]) -> list[SequenceSimulation]:
        """Simulations of several windows: one forward pass per window (local) or requests to the endpoint."""
        if self._local:
            return self._simulate_logits(explanation, windows)
        from neurolabel.lm.base import run_sync

        return run_sync(self._simulate_chat(explanation, windows))

    # ------------------------------------------------------------------ local: logits
    def _digit_ids(self) -> list[int]:
        tok = self.backend.tokenizer
        ids = []
        for v in range(self._scale() + 1):
            enc = tok.encode(str(v), add_special_tokens=False)
            if len(enc) != 1:
                raise ScoringError(f"digit {v!r} is {len(enc)} tokens for this tokenizer; set max_value=9")
            ids.append(enc[0])
        return ids

    def _enc(self, text: str) -> list[int]:
        return list(self.backend.tokenizer.encode(text, add_special_tokens=False)) if text else []

    def _window_ids(self, tokens: Sequence[str], offset: int) -> tuple[list[int], list[int]]:
        """Ids of the window part of the prompt and its slot positions (counted from ``offset``)."""
        tab, unknown, nl = self._enc("\t"), self._enc("unknown"), self._enc("\n")
        ids: list[int] = []
        slots = []
        for t in tokens:
            ids += self._enc(_show(t)) + tab
            slots.append(offset + len(ids) - 1)
            ids += unknown + nl
        ids += self._enc("<end>\n")
        return ids, slots

    def build_prompt(self, explanation: Explanation, tokens: Sequence[str]) -> tuple[list[int], list[int]]:
        """Prompt token ids and, per window token, the position whose next-token
        distribution is that token's activation (the tab before its ``unknown``).
        The ids are assembled piece by piece, so the header is a prefix shared by all windows."""
        head = self._enc(self._header(explanation))
        rest, slots = self._window_ids(tokens, len(head))
        return head + rest, slots

    def _from_logprobs(self, tokens: Sequence[str], rows: np.ndarray, method: str) -> SequenceSimulation:
        values = tuple(range(self._scale() + 1))
        exp, dist = [], []
        for row in rows:
            e, d = _expected(values, row)
            exp.append(e)
            dist.append(d)
        return SequenceSimulation(tokens=tuple(tokens), expected_activations=tuple(exp), method=method,
                                  distribution_values=tuple(float(v) for v in values),
                                  distribution_probabilities=tuple(dist))

    def _simulate_logits(self, explanation: Explanation, windows: Sequence[Sequence[str]]) -> list[SequenceSimulation]:
        """One forward pass per window; the shared header is run once and its key/value cache reused."""
        import copy
        from contextlib import nullcontext

        import torch

        cand = self._digit_ids()
        head = self._enc(self._header(explanation))
        model, device = self.backend.model, getattr(self.backend, "device", "cpu")
        lock = getattr(self.backend, "_lock", None) or nullcontext()
        out: list[SequenceSimulation] = []
        with lock, torch.inference_mode():
            prefix = model(input_ids=torch.tensor([head], device=device), use_cache=True).past_key_values
            self.forward_passes += 1
            for w in windows:
                rest, slots = self._window_ids(w, 0)
                if not slots:
                    out.append(self._from_logprobs(w, np.zeros((0, len(cand))), "logits"))
                    continue
                logits = model(input_ids=torch.tensor([rest], device=device), past_key_values=copy.deepcopy(prefix),
                               use_cache=True).logits[0]
                self.forward_passes += 1
                lp = torch.log_softmax(logits[slots].float(), dim=-1)[:, torch.tensor(cand, device=logits.device)]
                out.append(self._from_logprobs(w, lp.cpu().numpy(), "logits"))
        return out

    def simulate_token_by_token(self, explanation: Explanation, tokens: Sequence[str]) -> SequenceSimulation:
        """Reference: one forward pass per token over the prompt prefix ending at its slot."""
        cand = self._digit_ids()
        ids, slots = self.build_prompt(explanation, tokens)
        rows = [self.backend.next_token_logprobs([ids[: s + 1]], positions=[[s]], candidate_ids=cand)[0][0]
                for s in slots]
        self.forward_passes += len(slots)
        return self._from_logprobs(tokens, np.asarray(rows).reshape(len(slots), len(cand)), "logits-token-by-token")

    # ------------------------------------------------------------------ endpoint: logprobs / json
    def _system(self) -> str:
        return (f"You predict how strongly a neuron of a language model activates on a token, from an "
                f"explanation of what the neuron looks for. Activations go from 0 to {self._scale()}; "
                f"most tokens are 0.")

    def _listing_request(self, explanation_text: str, tokens: Sequence[str]) -> str:
        shown = "\n".join(_show(t) for t in tokens)
        return (f"Neuron explanation: {explanation_text.strip()}\n"
                f"Text, one token a line:\n<start>\n{shown}\n<end>\n"
                f"Copy the {len(tokens)} tokens in order, one a line, each followed by a tab and the neuron's "
                f"activation on it (an integer from 0 to {self._scale()}; it depends only on that token and the "
                f"tokens before it).")

    def _listing_messages(self, explanation: Explanation, tokens: Sequence[str]) -> list[dict[str, str]]:
        """System prompt, one worked example as a previous turn, then the window to simulate."""
        m = self._scale()
        example = ("The", " big", " dog", " barked", " at", " the", " cat")
        answer = "\n".join(f"{t}\t{v}" for t, v in zip(example, (0, 0, m, 0, 0, 0, round(0.9 * m))))
        return [{"role": "system", "content": self._system()},
                {"role": "user", "content": self._listing_request("animals", example)},
                {"role": "assistant", "content": answer},
                {"role": "user", "content": self._listing_request(explanation.text, tokens)}]

    def _listing_rows(self, choice: Any, n: int) -> list[list[float]] | None:
        """Digit log-probs of the numbers the answer writes after a token and a tab on its first
        ``n`` such lines (a line's position, not its copied text, says which token it is);
        ``None`` when there are fewer."""
        text = "".join(t.token for t in choice.tokens)
        starts, pos = [], 0
        for t in choice.tokens:
            starts.append(pos)
            pos += len(t.token)
        rows: list[list[float]] = []
        line_start = 0
        for line in text.split("\n"):
            tab = line.rfind("\t")
            if tab >= 0:
                rest = line[tab + 1:]
                digit = len(rest) - len(rest.lstrip(" "))
                if rest[digit:digit + 1].isdigit():
                    at = line_start + tab + 1 + digit
                    k = max(i for i, s0 in enumerate(starts) if s0 <= at)
                    tok = choice.tokens[k]
                    alts = list(tok.top_logprobs) or [(tok.token, tok.logprob)]
                    rows.append(self._digit_logprobs(alts))
            line_start += len(line) + 1
            if len(rows) == n:
                return rows
        return None

    def _digit_logprobs(self, alternatives: Sequence[tuple[str, float]]) -> list[float]:
        out = [-math.inf] * (self._scale() + 1)
        for text, lp in alternatives:
            s = text.strip()
            if s.isdigit() and int(s) <= self._scale():
                out[int(s)] = max(out[int(s)], lp) if out[int(s)] > -math.inf else lp
        return out

    async def _window_listing(self, explanation: Explanation, tokens: Sequence[str]) -> SequenceSimulation | None:
        """One request for the whole window: the answer copies the window one token a line, each
        followed by its number, and the expected value at each number is read from the logprobs
        of the digit alternatives there. ``None`` when the endpoint gives no logprobs; a JSON
        answer (one more request) when the listing cannot be read."""
        if not tokens:
            return self._from_logprobs(tokens, np.zeros((0, self._scale() + 1)), "logprobs")
        self.forward_passes += 1
        choice = (await self.backend.chat(
            self._listing_messages(explanation, tokens),
            temperature=0.0, max_tokens=16 + 8 * len(tokens), logprobs=True, top_logprobs=self.top_logprobs,
        ))[0]
        if not choice.tokens:
            return None  # the endpoint gives no logprobs
        rows = self._listing_rows(choice, len(tokens))
        if rows is None:
            log.info("%s: the answer is not a listing of %d tokens; asking for a JSON answer",
                     getattr(self.backend, "name", "endpoint"), len(tokens))
            return await self._window_json(explanation, tokens)
        return self._from_logprobs(tokens, np.asarray(rows, dtype=np.float64), "logprobs")

    async def _window_json(self, explanation: Explanation, tokens: Sequence[str]) -> SequenceSimulation:
        listing = "\n".join(f"{i + 1}\t{_show(t)}" for i, t in enumerate(tokens))
        user = (f"Explanation of the neuron: {explanation.text.strip()}\nTokens (number<tab>token):\n{listing}\n"
                f"Answer only with a JSON list of {len(tokens)} integers from 0 to {self._scale()}, "
                f"the neuron's activation on each token in order.")
        self.forward_passes += 1
        choice = (await self.backend.chat(
            [{"role": "system", "content": self._system()}, {"role": "user", "content": user}],
            temperature=0.0, max_tokens=8 + 4 * len(tokens),
        ))[0]
        match = re.search(r"\[[^\[\]]*\]", choice.text)
        try:
            values = json.loads(match.group(0)) if match else None
        except json.JSONDecodeError:
            values = None
        if (not isinstance(values, list) or len(values) != len(tokens)
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
            raise ScoringError(
                f"{getattr(self.backend, 'name', 'endpoint')}: expected a JSON list of {len(tokens)} numbers "
                f"as simulated activations, got {choice.text[:200]!r}"
            )
        vals = tuple(float(min(max(v, 0), self._scale())) for v in values)
        return SequenceSimulation(tokens=tuple(tokens), expected_activations=vals, method="json")

    async def _simulate_chat(self, explanation: Explanation, windows: Sequence[Sequence[str]]) -> list[SequenceSimulation]:
        out: list[SequenceSimulation] = []
        for w in windows:
            sim = None if self._json_only else await self._window_listing(explanation, w)
            if sim is None:
                if not self._json_only:
                    log.warning("%s returns no logprobs; simulating with JSON answers",
                                getattr(self.backend, "name", "endpoint"))
                self._json_only = True
                sim = await self._window_json(explanation, w)
            out.append(sim)
        return out
