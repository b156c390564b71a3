"""Lexical simulator for word and short-phrase labels (e.g. PMI's word descriptions): predicts
1 on tokens whose word is one of the label's words, 0 elsewhere.

Words are compared lower-cased with a light plural folding (``dogs``/``dog``,
``boxes``/``box``), so it costs a set lookup per token — cheap enough for every neuron of a
model. It applies only to labels of at most ``max_words`` words; longer, sentence-like labels
need the LLM or embedding simulator.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

from neurolabel.core.registry import SIMULATORS
from neurolabel.core.types import Explanation, SequenceSimulation

_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")
_STOP = frozenset("a an the of and or in on at to for with by from as is are be".split())


def fold(word: str) -> str:
    """Lower case with a light plural folding."""
    w = word.lower()
    if len(w) > 4 and w.endswith(("ses", "xes", "zes", "ches", "shes")):
        return w[:-2]
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        return w[:-1]
    return w


def label_words(text: str) -> frozenset[str]:
    """The folded content words of a label."""
    return frozenset(fold(w) for w in _WORD.findall(text.lower()) if w not in _STOP)


@SIMULATORS.register("lexical")
class LexicalSimulator:
    """1 where a token's word is one of the label's words, else 0."""

    kind = "lexical"

    def __init__(self, *, max_words: int = 3) -> None:
        self.max_words = max_words

    @classmethod
    def from_defaults(cls, **kwargs: Any) -> "LexicalSimulator":
        """With default settings (nothing to load)."""
        return cls(**kwargs)

    def applies(self, explanation: Explanation) -> bool:
        """Only short word/phrase labels."""
        words = _WORD.findall(explanation.text.lower())
        return 0 < len(words) <= self.max_words and bool(label_words(explanation.text))

    def simulate(self, explanation: Explanation, tokens: Sequence[str]) -> SequenceSimulation:
        """1.0 on tokens naming one of the label's words."""
        return self.simulate_many(explanation, [tokens])[0]

    def simulate_many(self, explanation: Explanation, token_lists: Sequence[Sequence[str]]
                      ) -> Sequence[SequenceSimulation]:
        """:meth:`simulate` for several windows at once (a :class:`scoring.scorers.FlatSimulations`:
        the scorer reads the predictions as one array)."""
        from neurolabel.scoring.scorers import FlatSimulations

        want = label_words(explanation.text)
        vals = []
        for tokens in token_lists:
            for t in tokens:
                ws = _token_words(t)
                vals.append(1.0 if ws and any(w in want for w in ws) else 0.0)
        return FlatSimulations(token_lists, np.array(vals, dtype=np.float64), "lexical")


_TOKEN_WORDS: dict[str, tuple[str, ...]] = {}
_TOKEN_WORDS_MAX = 200_000


def _token_words(token: str) -> tuple[str, ...]:
    """The folded words of a token (:func:`fold` of each word), memoised per token text (a run
    meets the same few thousand tokens in every neuron's windows)."""
    got = _TOKEN_WORDS.get(token)
    if got is None:
        got = tuple(fold(w) for w in _WORD.findall(token.lower()))
        if len(_TOKEN_WORDS) >= _TOKEN_WORDS_MAX:
            _TOKEN_WORDS.clear()
        _TOKEN_WORDS[token] = got
    return got
