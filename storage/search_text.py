"""The text a label's vector is computed from, its *search text*: a function of the label text alone.

:func:`search_text` is the label cut to its first :data:`SEARCH_TEXT_TOKENS` MiniLM tokens (at a
word end). The write path, :func:`storage.writes.fill_vectors` and ``neurolabel db reindex`` all
embed it, so a stored vector is ``embed_labels([search_text(label.text)])`` wherever it was made;
the stored ``text`` and full-text search keep the whole label.

Why a cut: concept-induction labels name their parts strongest first and run to ~160 tokens (up
to MiniLM's 256), and MiniLM's cost is linear in tokens. ``bench/search_quality.py`` (30 planted
units of ten known WordNet classes among 396 real SmolLM2 neurons' labels — the 96 of
``bench/pipeline.py``'s slice and both 150-neuron 100k-token recordings of ``bench/quality.py`` —
all by ``concept_induction``; loaded 2-core machine) measured, full text → cut at 96 tokens, with
the paired difference and its 95% bootstrap interval over the queries:

- planted-class queries (22, the classes' lemma names): MRR 0.934 → 0.888 (−0.046 [−0.114, 0]),
  recall@10 0.727 → 0.682 (−0.045 [−0.106, 0]); the MRR loss is two queries, "plant" and
  "plant life", whose first hit became a real neuron labelled "a kind of plant organ … right after
  a kind of plant part" (the planted one second); the recall loss is noisy planted labels ranked
  a few places lower behind real labels that name the class in their leading parts;
- known items (the WordNet classes a real label names, 1,347 queries, by the position of their
  part): MRR 0.557 → 0.708 (+0.151 [+0.104, +0.202]) for the strongest part, 0.304 → 0.372 (parts
  2–3), 0.107 → 0.159 (4–8), 0.068 → 0.069 (+0.001 [−0.014, +0.017], 9 and later) — a
  mean-pooled vector of 30 parts blurs the leading ones;
- MiniLM tokens per real label 139.0 → 78.7, embedding CPU of the 426 labels 11.3 → 6.5 s; in a
  labelling run (``bench/pipeline.py --no-llm --no-record``) 38 → 24 ms per neuron.

The rule was chosen on 246 of those real labels (planted MRR there 0.934 → 0.933); a cap of 128
tokens lost less on planted queries (MRR −0.023) and gained less on known items, 64 tokens lost
the late parts (9+: −0.045 [−0.057, −0.034]). The cut vectors are not the full ones (their ten
nearest labels share 38% with the full vectors'): vectors stored before this rule are in the same
space and are still searched, and ``neurolabel db reindex --revector`` recomputes them."""

from __future__ import annotations

import threading

SEARCH_TEXT_TOKENS = 96
"""MiniLM tokens (``[CLS]`` and ``[SEP]`` included) a label's vector is computed from."""

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


def search_text(text: str) -> str:
    """The text a label of text ``text`` is embedded from: ``text`` cut after its last whole word
    within :data:`SEARCH_TEXT_TOKENS` MiniLM tokens (the whole text when it fits)."""
    return cap_tokens(text, SEARCH_TEXT_TOKENS)


def search_texts(texts: list[str] | tuple[str, ...]) -> list[str]:
    """:func:`search_text` of each of ``texts``, the long ones tokenized in one batch call (a
    labelling run's write embeds ~200 labels: one call each cost ~0.3 ms of the run's process per
    label, about an eighth of its CPU in a whole-model run)."""
    room = SEARCH_TEXT_TOKENS - 2
    out = list(texts)
    long = [i for i, t in enumerate(out) if len(t) > room]
    if long:
        batch = _minilm_tokenizer()([out[i] for i in long], add_special_tokens=False, return_offsets_mapping=True)
        for i, offsets in zip(long, batch["offset_mapping"], strict=True):
            out[i] = _cut(out[i], offsets, room)
    return out
