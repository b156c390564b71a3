"""LLM simulator, "all at once" as in OpenAI's neuron-explainer.

One prompt holds the explanation and the window's tokens, each followed by a tab and an
``unknown`` activation slot. The predicted activation at a slot is the expected value over
the next-token probabilities of the digit tokens ``"0"``…``"max"``, renormalised over those
digits. A causal language model sees, at each slot, only the prompt before it: the tokens of
the window up to and including the slot's own token, never the ones after it.

**Scale.** OpenAI's prompts use 0–10. SmolLM2's tokenizer splits ``"10"`` into ``"1"`` ``"0"``,
so a slot could not hold 10 in one token; the scale is therefore 0–9 whenever ``"10"`` is not a
single token of the model's tokenizer (0–10 otherwise). An endpoint's tokenizer is not known in
advance: its scale is 0–10 unless ``max_value`` says otherwise (the ``prompt-logprobs`` method
logs a warning when the endpoint splits the example's ``10``). Scores are correlations, so the
scale does not change them.

**Methods** (recorded in ``SequenceSimulation.method``, and from there in the ``ScoreResult`` and
the stored score's ``method``; a score over windows simulated by several methods lists them
joined by ``+``):

- ``logits`` (a backend with ``supports_logits``: the local transformers model): the prompt's
  token ids are assembled piece by piece, so every slot's position is known; one forward pass
  per window reads the distribution at all slots (the header — instructions, example,
  explanation — is run once per explanation and its key/value cache reused by every window)
  (:meth:`LLMSimulator.simulate_token_by_token` is the one-forward-pass-per-token reference; a
  test checks they agree). Causal.
- ``prompt-logprobs`` (an OpenAI-compatible endpoint, first choice): **one request per window**
  with the same prompt text as ``logits`` (:meth:`LLMSimulator.prompt_text`), sent to the
  legacy Completions API with ``echo`` and ``logprobs`` (:meth:`lm.openai_backend.OpenAIBackend.prompt_logprobs`),
  which returns every prompt token with its ``text_offset`` and ``top_logprobs``. Each slot is
  found by its character offset, and the digits among its top alternatives give its distribution
  (digits outside the top ``top_logprobs`` count as 0). Causal, as ``logits``: on the same model
  and tokenization the numbers agree. When the endpoint's tokenizer merges a slot with the tab
  before it, the token starting at the tab is read (its alternatives such as ``"\t7"`` count as
  digits); when no token starts at the slot or its tab, that window falls back to the chat listing
  (logged). An endpoint that does not serve prompt logprobs (HTTP 400/404/405/422/501, or no
  logprobs in the answer) switches the simulator to the chat listing for good (logged once).
- ``logprobs`` (chat listing; endpoints without prompt logprobs): one chat request per window.
  The model writes the listing itself: the answer copies the window one token a line, in order,
  each token followed by a tab and its activation, as in OpenAI's all-at-once format; the
  expected value at each number is read from the ``top_logprobs`` alternatives that are digits
  (0 when none is). **Not causal**: the whole window is in the user message (a chat answer cannot
  copy tokens it was never shown), so the number written for a token was conditioned on the
  tokens after it; the prompt only asks the model to judge each token from the ones before it.
  An answer that is not a listing of the window's tokens is asked again for JSON (one more request).
- ``json`` (endpoint that returns no logprobs at all): one request per window asking for a JSON
  list of integers.

``endpoint_method`` chooses: ``auto`` (``prompt-logprobs`` → ``logprobs`` → ``json``, each step
taken when the one before is not served), or one of them alone (``prompt-logprobs`` then raises
:class:`core.errors.ScoringError` where ``auto`` would fall back; ``logprobs`` still falls back to
``json``). Servers whose echoed prompt logprobs are wrong (llama.cpp's server, see NOTES) want
``endpoint_method="logprobs"``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from typing import Any, Sequence

import numpy as np

from neurolabel.core.errors import ConfigError, LMCapabilityError, ScoringError
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
_SLOT = "unknown"
"""What stands in a slot; the activation is the model's distribution over what comes there."""
_END = "<end>\n"
_ENDPOINT_METHODS = ("auto", "prompt-logprobs", "logprobs", "json")


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
                 top_logprobs: int = 20, endpoint_method: str = "auto") -> None:
        if endpoint_method not in _ENDPOINT_METHODS:
            raise ConfigError(f"llm simulator: endpoint_method must be one of {', '.join(_ENDPOINT_METHODS)}, "
                              f"got {endpoint_method!r}")
        self.backend = backend
        self.max_value = max_value
        self.batch_size = batch_size
        self.top_logprobs = top_logprobs
        self.endpoint_method = endpoint_method
        """``auto`` or the one endpoint method to use (see the module docstring)."""
        self.forward_passes = 0
        """Forward passes (local) or requests (endpoint) made so far, for benchmarks."""
        self._mode = "prompt-logprobs" if endpoint_method == "auto" else endpoint_method
        """The endpoint method in use now (``auto`` steps down when one is not served)."""
        self._scale_checked = False

    @classmethod
    def from_defaults(cls, **kwargs: Any) -> "LLMSimulator":
        """Over the configured backend (``lm.factory.backend_from_settings``: endpoint or local SmolLM2)."""
        from neurolabel.lm.factory import backend_from_settings

        return cls(backend_from_settings(), **kwargs)

    # ------------------------------------------------------------------ shared
    @property
    def _local(self) -> bool:
        return bool(self.backend.supports_logits)

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

    def prompt_text(self, explanation: Explanation, tokens: Sequence[str]) -> tuple[str, list[int]]:
        """The all-at-once prompt as text and, per window token, the character offset of its
        ``unknown`` slot. :meth:`build_prompt` encodes the same text piece by piece."""
        parts = [self._header(explanation)]
        at, slots = len(parts[0]), []
        for t in tokens:
            line = _show(t) + "\t"
            slots.append(at + len(line))
            parts.append(line + _SLOT + "\n")
            at += len(parts[-1])
        parts.append(_END)
        return "".join(parts), slots

    def simulate(self, explanation: Explanation, tokens: Sequence[str]) -> SequenceSimulation:
        """Predicted activation of every token of one window."""
        return self.simulate_many(explanation, [tokens])[0]

    def simulate_many(self, explanation: Explanation, windows: Sequence[Sequence[str]]) -> list[SequenceSimulation]:
        """Simulations of several windows: one forward pass per window (local) or one request per
        window to the endpoint (a second one only where a chat listing falls back to JSON)."""
        if self._local:
            return self._simulate_logits(explanation, windows)
        from neurolabel.lm.base import run_sync

        return run_sync(self._simulate_endpoint(explanation, windows))

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
        tab, unknown, nl = self._enc("\t"), self._enc(_SLOT), self._enc("\n")
        ids: list[int] = []
        slots = []
        for t in tokens:
            ids += self._enc(_show(t)) + tab
            slots.append(offset + len(ids) - 1)
            ids += unknown + nl
        ids += self._enc(_END)
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

    async def _simulate_endpoint(self, explanation: Explanation,
                                 windows: Sequence[Sequence[str]]) -> list[SequenceSimulation]:
        out: list[SequenceSimulation] = []
        for w in windows:
            sim = None
            if self._mode == "prompt-logprobs":
                sim = await self._window_prompt_logprobs(explanation, w)
            if sim is None and self._mode in ("prompt-logprobs", "logprobs"):
                sim = await self._window_listing(explanation, w)
                if sim is None:
                    log.warning("%s returns no logprobs; simulating with JSON answers", self._backend_name)
                    self._mode = "json"
            if sim is None:
                sim = await self._window_json(explanation, w)
            out.append(sim)
        return out

    @property
    def _backend_name(self) -> str:
        return str(getattr(self.backend, "name", "endpoint"))

    # ------------------------------------------------------------------ endpoint: prompt logprobs
    async def _window_prompt_logprobs(self, explanation: Explanation,
                                      tokens: Sequence[str]) -> SequenceSimulation | None:
        """One Completions request scoring the all-at-once prompt (causal). ``None`` when this
        window's slots cannot be read (it goes to the chat listing); when the endpoint does not
        serve prompt logprobs, the simulator steps down to the chat listing for good (``auto``)."""
        if not tokens:
            return self._from_logprobs(tokens, np.zeros((0, self._scale() + 1)), "prompt-logprobs")
        text, slots = self.prompt_text(explanation, tokens)
        if not self.backend.supports_prompt_logprobs:
            return self._not_served(f"{self._backend_name} does not score prompts")
        self.forward_passes += 1
        try:
            scored = await self.backend.prompt_logprobs(text, top_logprobs=self.top_logprobs)
        except LMCapabilityError as exc:
            return self._not_served(str(exc))
        starts = {t.offset: k for k, t in enumerate(scored)}
        self._check_scale(text, scored, starts)
        rows: list[list[float]] = []
        for i, at in enumerate(slots):
            k = starts.get(at)
            if k is None:
                k = starts.get(at - 1)  # "\tunknown" as one token: read the one starting at the tab
                if k is None:
                    reason = (f"{self._backend_name}: no prompt token starts at the slot of window token {i} "
                              f"({tokens[i]!r}) or at its tab")
                    if self.endpoint_method == "prompt-logprobs":
                        raise ScoringError(f"llm simulator (endpoint_method='prompt-logprobs'): {reason}")
                    log.warning("%s; this window falls back to the chat listing (not causal)", reason)
                    return None
            rows.append(self._digit_logprobs(scored[k].top_logprobs))
        return self._from_logprobs(tokens, np.asarray(rows, dtype=np.float64), "prompt-logprobs")

    def _not_served(self, reason: str) -> None:
        if self.endpoint_method == "prompt-logprobs":
            raise ScoringError(f"llm simulator (endpoint_method='prompt-logprobs'): {reason}")
        if self._mode == "prompt-logprobs":  # windows in flight together may all be refused: log once
            log.warning("%s; the llm simulator falls back to the chat listing, which is not causal "
                        "(the window is in the user message)", reason)
        self._mode = "logprobs"
        return None

    def _check_scale(self, text: str, scored: Sequence[Any], starts: dict[int, int]) -> None:
        """Warn once when the endpoint's tokenizer does not keep the example's top value (e.g.
        ``10``) as one token: a slot then cannot hold it (set ``max_value=9``)."""
        if self._scale_checked:
            return
        self._scale_checked = True
        m = str(self._scale())
        at = text.index(f" dog\t{m}\n") + len(" dog\t")
        k = starts.get(at)
        if k is None or scored[k].token.strip() != m:
            log.warning("%s: %r is not one token for this endpoint's tokenizer, so a slot cannot hold it; "
                        "set the llm simulator's max_value=9", self._backend_name, m)
