"""The text a label's vector is computed from, its *search text*: a function of the label text alone.

:func:`search_text` is the label *compacted* (:func:`compact`: the phrases every concept-induction
label repeats, ``mentions of``, ``a kind of``, ``the token``, ``right after`` → ``after``, and the
signed weights of its lexical kinds, dropped) and cut to its first :data:`SEARCH_TEXT_TOKENS` MiniLM
tokens (at a word end). The write path, :func:`storage.writes.fill_vectors` and ``neurolabel db
reindex`` all embed it, so a stored vector is ``embed_labels([search_text(label.text)])`` wherever
it was made; the stored ``text`` and full-text search keep the whole label.

Why: concept-induction labels name their parts strongest first and run to ~160 tokens (up to
MiniLM's 256), and MiniLM's cost is linear in tokens: on a CPU without AMX (float32) label
embeddings were half a whole-model run's CPU. ``bench/search_quality.py`` measures retrieval
against known concepts: 30 planted units of ten known WordNet classes (22 queries, their lemma
names) among real SmolLM2 neurons' labels, all by ``concept_induction``, and *known items* (each
WordNet class a real label names, by the position of its part, 1 = the strongest).

The first rule (2026-11) was the label cut at 96 tokens (``cap96``), against the full text (396
real labels): planted MRR 0.934 → 0.888, known-item MRR 0.557 → 0.708 for the strongest part, 0.304
→ 0.372 (parts 2–3), 0.107 → 0.159 (4–8), 0.068 → 0.069 (9+), tokens per real label 139.0 → 78.7.
The compacted text cut at 64 tokens (``cmp64``, adopted 2026-11-30) carries as many parts in fewer
tokens and without the filler that blurs a mean-pooled vector. Against ``cap96``, paired per query
with 95% bootstrap intervals (``--caps 96 --compact 96,64,48 --against cap96``, 2-core AMD EPYC):

- 480 layer-10 neurons (``bench/pipeline.py``'s slice), the set the rule was chosen on: tokens per
  real label 86.9 → 55.6, embedding CPU 13.9 → 9.0 s; planted MRR 0.915 → 0.893 (−0.021 [−0.072,
  +0.009]), R@10 0.591 → 0.636 (+0.045 [0, +0.091]); known-item MRR 0.702 → 0.793 (strongest part,
  +0.091 [+0.041, +0.143]), 0.340 → 0.417 (2–3, +0.078), 0.164 → 0.200 (4–8, +0.036), 0.072 → 0.082
  (9+, +0.010 [−0.005, +0.025]);
- 480 layer-20 neurons, not used to choose: tokens 88.9 → 57.7, embedding CPU 16.4 → 10.0 s; planted
  MRR 0.838 → 0.842 (+0.003 [−0.013, +0.023]), R@10 0.621 → 0.682 (+0.061 [−0.015, +0.136]);
  known-item MRR +0.073 [+0.018, +0.130] (strongest part), +0.047 [+0.012, +0.083] (2–3), +0.031
  [+0.013, +0.051] (4–8), +0.006 [−0.010, +0.021] (9+).

A cap of 48 tokens after compacting (``cmp48``) cost less again (44 tokens) and lost the late parts
(9+: −0.015 [−0.028, −0.001] on layer 20). Vectors stored under an earlier rule are in the same space and are still
searched; ``neurolabel db reindex --revector`` recomputes them."""

from __future__ import annotations

import threading

import re

SEARCH_TEXT_TOKENS = 64
"""MiniLM tokens (``[CLS]`` and ``[SEP]`` included) a label's vector is computed from, after
:func:`compact`."""

_FILLER = tuple((re.compile(p), r) for p, r in (
    (r"^mentions of ", ""),
    (r"\blower on mentions of ", "lower on "),
    (r"\ba token right after ", "after "),
    (r"\bright after ", "after "),
    (r"\ba kind of ", ""),
    (r"\bthe token ", ""),
    (r" [+-]\d*\.?\d+(?:e[+-]?\d+)?(?=[,;]|$)", ""),  # a lexical kind's weight ("determiner +0.054,")
))

_tokenizer: list = []
_lock = threading.Lock()


def _minilm_tokenizer():
    """MiniLM's (fast) tokenizer, loaded once (offline, from the installed model)."""
    if not _tokenizer:
        with _lock:
            if not _tokenizer:
                from transformers import AutoTokenizer

                from neurolabel.core.assets import minilm_dir

                _tokenizer.append(AutoTokenizer.from_pretrained(str(minilm_dir())))
    return _tokenizer[0]


def cap_tokens(text: str, n: int) -> str:
    """``text`` cut after its last whole word within ``n`` MiniLM tokens (``[CLS]`` and
    ``[SEP]`` included), separators at the cut (``", "``, ``";"``) dropped; ``text`` itself when it
    fits. ``ValueError`` for ``n < 3``."""
    if n < 3:
        raise ValueError(f"a search text needs at least 3 tokens, not {n}")
    room = n - 2
    if len(text) <= room:  # every token covers at least one character
        return text
    offsets = _minilm_tokenizer()(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return _cut(text, offsets, room)


def _cut(text: str, offsets: list[tuple[int, int]], room: int) -> str:
    """``text`` cut after its last whole word within its first ``room`` tokens (``offsets``: each
    token's character span)."""
    if len(offsets) <= room:
        return text
    end = offsets[room - 1][1]
    if offsets[room][0] == end:  # the next token continues this word: cut before the word
        end = max(text.rfind(" ", 0, end), 0)
    return text[:end].rstrip(" ,;") or text[:offsets[room - 1][1]]


def compact(text: str) -> str:
    """``text`` without the phrases concept-induction labels repeat in every part (``mentions of``,
    ``a kind of``, ``the token``; ``a token right after`` and ``right after`` said ``after``) and
    without the signed weights after its lexical kinds: ``"mentions of a kind of animal (dog) right
    after the token "the"; other tokens: determiner +0.05"`` → ``"animal (dog) after "the"; other
    tokens: determiner"``. Other text is kept as it is."""
    for pattern, said in _FILLER:
        text = pattern.sub(said, text)
    return text


def search_text(text: str) -> str:
    """The text a label of text ``text`` is embedded from: :func:`compact` of ``text``, cut after
    its last whole word within :data:`SEARCH_TEXT_TOKENS` MiniLM tokens (all of it when it fits)."""
    return cap_tokens(compact(text), SEARCH_TEXT_TOKENS)


def search_texts(texts: list[str] | tuple[str, ...]) -> list[str]:
    """:func:`search_text` of each of ``texts``, the long ones tokenized in one batch call (a
    labelling run's write embeds ~200 labels: one call each cost ~0.3 ms of the run's process per
    label, about an eighth of its CPU in a whole-model run)."""
    room = SEARCH_TEXT_TOKENS - 2
    out = [compact(t) for t in texts]
    long = [i for i, t in enumerate(out) if len(t) > room]
    if long:
        batch = _minilm_tokenizer()([out[i] for i in long], add_special_tokens=False, return_offsets_mapping=True)
        for i, offsets in zip(long, batch["offset_mapping"], strict=True):
            out[i] = _cut(out[i], offsets, room)
    return out
