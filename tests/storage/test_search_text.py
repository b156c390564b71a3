"""A label's search text: the label compacted (its repeated phrases and kind weights dropped), cut
after its last whole word within 64 MiniLM tokens."""

from __future__ import annotations

import pytest

from neurolabel.lm.embeddings import load_embedder
from neurolabel.storage.search_text import SEARCH_TEXT_TOKENS, cap_tokens, compact, search_text

LONG = ("mentions of the token \"come\", the token \"little\", no longer (no more) right after no longer, "
        "a kind of time unit (sec), a number word (hundred, thousand, second, million), a kind of change verb "
        "(come on) right after a kind of change verb, a kind of long, the token \"never\", the token \"thou\", "
        "a token right after a number (digits) or a preposition (on, till), a kind of hallucinogenic drug "
        "(psilocybin), a kind of organization (country, business); lower on mentions of the token \"the\"")


def _n_tokens(text: str) -> int:
    return len(load_embedder().tokenizer(text, add_special_tokens=True)["input_ids"])


def test_a_short_label_without_the_repeated_phrases_is_its_own_search_text() -> None:
    for text in ("animal (dog, cat)", "", "x" * 62, "\"of\"", "social group", "a dog +1 kind of ok"):
        assert search_text(text) == text


@pytest.mark.parametrize("text, said", [
    ("mentions of a kind of animal (dog, cat)", "animal (dog, cat)"),
    ('mentions of the token "not" right after a kind of be', '"not" after be'),
    ('mentions of a token right after the token "or", a verb (go) or a noun; lower on mentions of a kind of '
     'whole (gentleman) or an article; other tokens: determiner +0.054, pronoun -0.05, number word +2e-05',
     'after "or", a verb (go) or a noun; lower on whole (gentleman) or an article; other tokens: determiner, '
     'pronoun, number word'),
    ("a kind of magic +1 trick", "magic +1 trick"),  # a number inside the text is kept
    ("the tokens of a kind", "the tokens of a kind"),
])
def test_compact_drops_the_repeated_phrases_and_the_kinds_weights(text: str, said: str) -> None:
    assert compact(text) == said
    assert search_text(text) == said


def test_a_long_label_is_compacted_then_cut_after_its_last_whole_word_within_the_cap() -> None:
    short = compact(LONG)
    assert _n_tokens(short) > SEARCH_TEXT_TOKENS and _n_tokens(short) < _n_tokens(LONG)
    cut = search_text(LONG)
    assert short.startswith(cut) and cut != short
    assert _n_tokens(cut) <= SEARCH_TEXT_TOKENS
    assert short[len(cut)] in " ,;"  # ends at a word end, the separator dropped
    assert not cut.endswith((",", " ", ";"))
    nxt = short.find(" ", len(cut) + 1)  # one more word would not fit
    assert _n_tokens(short[:nxt].rstrip(" ,;")) > SEARCH_TEXT_TOKENS


@pytest.mark.parametrize("n", [3, 5, 17, 40])
def test_cap_tokens_never_exceeds_the_cap_and_splits_only_a_first_word_too_long(n: int) -> None:
    words = "antidisestablishmentarianism hallucinogenic psilocybin " * 6
    cut = cap_tokens(words, n)
    assert words.startswith(cut) and cut and _n_tokens(cut) <= n
    # at a word end; only a first word longer than the cap is cut within it (never an empty text)
    assert words[len(cut)] == " " or " " not in cut


def test_a_cap_below_three_tokens_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 3 tokens"):
        cap_tokens("mentions of a kind of animal", 2)


def test_search_texts_cut_a_batch_as_search_text_cuts_each() -> None:
    """The write path cuts a write's labels in one tokenizer call: the same texts as one call each."""
    from neurolabel.storage.search_text import search_texts

    words = LONG.split()
    texts = ["", "x" * 62, "x" * 63, LONG, LONG[:200], "日本 " * 80, "antidisestablishmentarianism " * 12]
    texts += [" ".join(words[i:]) for i in range(0, len(words), 7)]
    got = search_texts(texts)
    assert got == [search_text(t) for t in texts]
    assert sum(g != t for g, t in zip(got, texts)) >= 3  # long ones were cut
    assert search_texts([]) == []
