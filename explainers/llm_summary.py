"""LLM summariser: an explainer in the style of OpenAI's neuron-explainer.

The explain-split top windows are shown to a chat model as ``token<TAB>activation`` lines,
activations normalised to integers 0–10 (``floor(10·relu(a)/max)``, ``max`` over the shown
windows), followed by the same lines with zeros filtered out and by the tokens the neuron fires on
most over the whole explain split (its token statistics, :func:`explainers.tokens.token_table`:
mean activation per token type on the same 0–10 scale) — the evidence the ``tokens`` explainer
uses; the model completes "the main thing this neuron does is find …". ``n`` candidates are sampled and all returned (ranked by
their mean token log-probability) so the validator can pick the best. The prompt lives in
``explainers/prompts/``. An empty or unparseable answer is an :class:`ExplanationError`.
"""

from __future__ import annotations

import json
import logging
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from neurolabel.core.errors import ExplanationError, LMError
from neurolabel.core.registry import EXPLAINERS
from neurolabel.core.text import show_token as _show
from neurolabel.core.types import ActivationRecord, Explanation, NeuronRecord
from neurolabel.lm.base import ChatBackend, ChatChoice, Message, run_sync

log = logging.getLogger(__name__)

PROMPTS = Path(__file__).with_name("prompts")
"""Folder of the prompt files."""

_LEAD = re.compile(
    r"^\s*(?:explanation[^:]*:\s*)?(?:the main thing this neuron does is\s*)?(?:to\s+)?(?:find(?:ing|s)?\s*)?(?::\s*)?",
    re.IGNORECASE,
)


_VERB = re.compile(
    r"\b(?:find|finds|finding|identify|identifies|detect|detects|look for|looks for|recogni[sz]es?)\s+"
    r"(?:and\s+\w+\s+)?(.+)",
    re.IGNORECASE,
)


@lru_cache(maxsize=None)
def _prompt(name: str) -> str:
    return (PROMPTS / name).read_text(encoding="utf-8")


def normalised_activations(windows: Sequence[ActivationRecord]) -> list[list[int]]:
    """Per window, ``floor(10·relu(a)/max)`` with ``max`` over all ``windows`` (0–10 integers).

    Raises :class:`ExplanationError` when no activation is positive."""
    top = max((a for w in windows for a in w.activations), default=0.0)
    if not top > 0:
        raise ExplanationError("no positive activation in the explain windows: nothing to summarise")
    return [[min(10, int(math.floor(10 * max(a, 0.0) / top))) for a in w.activations] for w in windows]



def crop(window: ActivationRecord, width: int | None) -> ActivationRecord:
    """The ``width`` tokens of ``window`` around its largest activation (unchanged if shorter)."""
    if width is None or len(window.tokens) <= width:
        return window
    peak = max(range(len(window.activations)), key=window.activations.__getitem__)
    start = max(0, min(peak - width // 2, len(window.tokens) - width))
    return ActivationRecord(
        tokens=window.tokens[start : start + width],
        activations=window.activations[start : start + width],
        window_id=window.window_id,
        split=window.split,
        kind=window.kind,
        quantile=window.quantile,
    )


def format_windows(tokens: Sequence[Sequence[str]], acts: Sequence[Sequence[int]]) -> tuple[str, str]:
    """The all-tokens block and the non-zero-only block of the prompt."""
    full, nonzero = [], []
    for toks, ints in zip(tokens, acts):
        lines = [f"{_show(t)}\t{a}" for t, a in zip(toks, ints)]
        full.append("<start>\n" + "\n".join(lines) + "\n<end>")
        nz = [f"{_show(t)}\t{a}" for t, a in zip(toks, ints) if a > 0]
        nonzero.append("<start>\n" + "\n".join(nz) + "\n<end>")
    return "\n".join(full), "\n".join(nonzero)


def format_token_table(record: NeuronRecord, windows: Sequence[ActivationRecord], n: int = 10) -> str:
    """The prompt block listing the ``n`` tokens with the highest mean activation over the
    explain split (at least 1 on the windows' 0–10 scale), or ``""`` when there are none."""
    from neurolabel.explainers.tokens import token_table

    top = max((a for w in windows for a in w.activations), default=0.0)
    if not top > 0:
        return ""
    table, _, _ = token_table(record)
    best = sorted(((m, t) for t, (c, m) in table.items() if m > 0), reverse=True)[:n]
    lines = [f"{_show(t)}\t{min(10, int(math.floor(10 * m / top)))}" for m, t in best if m >= 0.1 * top]
    if not lines:
        return ""
    return ("\nTokens it fires on most, averaged over all of its text (token<tab>mean activation):\n"
            + "\n".join(lines) + "\n")


def build_messages(
    windows: Sequence[ActivationRecord], *, neuron_label: str = "1", few_shot: bool = False,
    token_table: str = "",
) -> list[Message]:
    """The chat messages asking for an explanation of ``windows`` (already chosen and cropped);
    ``token_table`` is the block of :func:`format_token_table` (empty: none)."""
    msgs: list[Message] = [{"role": "system", "content": _prompt("llm_summary_system.txt").strip()}]
    if few_shot:
        for ex in json.loads(_prompt("llm_summary_fewshot.json")):
            toks = [[t for t, _ in w] for w in ex["windows"]]
            ints = [[int(a) for _, a in w] for w in ex["windows"]]
            full, nz = format_windows(toks, ints)
            msgs.append(
                {
                    "role": "user",
                    "content": _prompt("llm_summary_user.txt").format(
                        neuron=ex["neuron"], windows=full, nonzero=nz, token_table="").strip(),
                }
            )
            msgs.append({"role": "assistant", "content": ex["answer"]})
    ints = normalised_activations(windows)
    full, nz = format_windows([w.tokens for w in windows], ints)
    msgs.append(
        {
            "role": "user",
            "content": _prompt("llm_summary_user.txt").format(
                neuron=neuron_label, windows=full, nonzero=nz, token_table=token_table).strip(),
        }
    )
    return msgs


def parse_answer(text: str) -> str:
    """The explanation in a model answer: first line, the "the main thing … find" lead, quotes
    and the final full stop removed. Raises :class:`ExplanationError` when nothing usable is left."""
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    if not lines:
        raise ExplanationError("empty answer from the language model")
    s = _LEAD.sub("", lines[0], count=1)
    s = s.strip().strip("\"'`*").strip()
    if len(s.split()) > 8:  # a chatty sentence about "the neuron": keep what it is said to find
        m = _VERB.search(s)
        if m and len(m.group(1).split()) >= 1:
            s = m.group(1)
    s = re.sub(r"[.\s]+$", "", s)
    if len(s) > 200:
        s = s[:200].rsplit(" ", 1)[0]
    if "<start>" in s or "<end>" in s or "\t" in s:
        raise ExplanationError(f"answer repeats the activation format instead of explaining: {text[:80]!r}")
    if sum(ch.isalpha() for ch in s) < 2:
        raise ExplanationError(f"unparseable answer from the language model: {text[:80]!r}")
    return s


def _mean_logprob(choice: ChatChoice) -> float | None:
    if not choice.tokens:
        return None
    return sum(t.logprob for t in choice.tokens) / len(choice.tokens)


@EXPLAINERS.register("llm_summary")
class LLMSummaryExplainer:
    """Summarises the top explain windows with a chat model (best-of-``n`` candidates)."""

    kind = "llm_summary"
    version = "2"
    default_simulator = "llm"

    def __init__(
        self,
        backend: ChatBackend,
        *,
        n: int = 3,
        temperature: float = 0.7,
        max_windows: int = 4,
        window_tokens: int | None = 24,
        few_shot: bool = False,
        max_tokens: int = 32,
    ) -> None:
        self.backend = backend
        """The chat backend (local or OpenAI-compatible, usually behind the response cache)."""
        self.n = n
        """Candidates sampled per neuron."""
        self.temperature = temperature
        """Sampling temperature (0 = greedy; then ``n`` is 1 in effect)."""
        self.max_windows = max_windows
        """Explain-split top windows shown."""
        self.window_tokens = window_tokens
        """Tokens shown per window, around its peak (``None``: whole windows)."""
        self.few_shot = few_shot
        """Prepend the worked examples of ``prompts/llm_summary_fewshot.json``."""
        self.max_tokens = max_tokens
        """Longest answer, in tokens."""

    @classmethod
    def from_defaults(cls, **kwargs: Any) -> "LLMSummaryExplainer":
        """Over :func:`lm.factory.backend_from_settings` (OpenAI-compatible if configured, else local; cached)."""
        from neurolabel.lm.factory import backend_from_settings

        return cls(backend_from_settings(), **kwargs)

    def params(self) -> dict[str, Any]:
        """Parameters stored with each explanation."""
        return {
            "backend": getattr(self.backend, "name", type(self.backend).__name__),
            "n": self.n,
            "temperature": self.temperature,
            "max_windows": self.max_windows,
            "window_tokens": self.window_tokens,
            "few_shot": self.few_shot,
            "max_tokens": self.max_tokens,
        }

    def messages(self, record: NeuronRecord) -> list[Message]:
        """The prompt for ``record`` (explain-split top windows only)."""
        windows = sorted(record.windows("top", "explain"), key=lambda w: -w.max_activation)[: self.max_windows]
        if not windows:
            raise ExplanationError(f"neuron {record.neuron} of {record.model}: no explain-split top windows")
        table = format_token_table(record, windows)
        windows = [crop(w, self.window_tokens) for w in windows]
        try:
            return build_messages(windows, neuron_label="1", few_shot=self.few_shot, token_table=table)
        except ExplanationError as exc:
            raise ExplanationError(f"neuron {record.neuron} of {record.model}: {exc}") from None

    async def aexplain(self, record: NeuronRecord) -> list[Explanation]:
        """Async :meth:`explain`."""
        msgs = self.messages(record)
        try:
            choices = await self.backend.chat(
                msgs, n=self.n, temperature=self.temperature, max_tokens=self.max_tokens, logprobs=True
            )
        except LMError:
            raise
        parsed: list[tuple[str, float | None, str]] = []
        rejected: list[str] = []
        seen: set[str] = set()
        for c in choices:
            try:
                text = parse_answer(c.text)
            except ExplanationError:
                rejected.append(c.text)
                continue
            if text.lower() in seen:
                continue
            seen.add(text.lower())
            parsed.append((text, _mean_logprob(c), c.text))
        if not parsed:
            raise ExplanationError(
                f"neuron {record.neuron} of {record.model}: no usable answer among {len(choices)} from "
                f"{self.params()['backend']}: {[c[:60] for c in rejected]!r}"
            )
        if rejected:
            log.info("neuron %s: %d of %d answers unparseable", record.neuron, len(rejected), len(choices))
        parsed.sort(key=lambda p: -(p[1] if p[1] is not None else -math.inf))
        params = self.params()
        return [
            Explanation(
                model=record.model,
                neuron=record.neuron,
                explainer=self.kind,
                explainer_version=self.version,
                text=text,
                structured={"raw": raw, "mean_logprob": lp, "rejected": len(rejected), "candidates": len(choices)},
                params=params,
                rank=rank,
            )
            for rank, (text, lp, raw) in enumerate(parsed)
        ]

    def explain(self, record: NeuronRecord) -> list[Explanation]:
        """Candidate explanations of ``record``'s neuron, best (highest mean log-probability) first."""
        return run_sync(self.aexplain(record))
