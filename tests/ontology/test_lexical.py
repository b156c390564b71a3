"""The lexical layer: per-token orthographic kinds, forms, pieces, function-word lists."""

from __future__ import annotations

from neurolabel.ontology.lexical import (
    FUNCTION_CLASSES,
    form_candidates,
    function_words,
    lexical_classes,
    punctuation_kinds,
    token_kinds,
)


def kinds(tokens):
    return [k for k, _, _ in token_kinds(tokens)]


def test_word_pieces_are_typed_per_token():
    got = token_kinds(["The", " eleph", "ant", "ine", " ran", "ning", "."])
    assert "WholeWord" in got[0][0] and "Capitalised" in got[0][0] and got[0][1] == "the"
    assert "WordInitialPiece" in got[1][0] and got[1][1] is None  # a piece has no form
    assert "WordContinuationPiece" in got[2][0] and "SuffixPiece" not in got[2][0]  # not word-final
    assert "WordContinuationPiece" in got[3][0] and "SuffixPiece" not in got[3][0]  # not a listed suffix
    assert "WordContinuationPiece" in got[5][0] and got[5][2] is None
    assert "SuffixPiece" in token_kinds([" walk", "ing"])[1][0]
    assert token_kinds([" walk", "ing"])[1][2] == "ing"
    assert "PrefixPiece" in token_kinds([" un", "happy"])[0][0]
    assert "SentenceEnd" in got[6][0] and got[6][1] == "."


def test_punctuation_kinds_and_apostrophes():
    k = kinds(["(", "see", ")", ",", " \"", "It", "'s", " -", " 42", " NASA", "\n", " "])
    assert "OpeningBracket" in k[0] and "ClosingBracket" in k[2] and "Comma" in k[3]
    assert "Quote" in k[4] and "Apostrophe" in k[6] and "Quote" not in k[6]
    assert "Dash" in k[7] and "Number" in k[8] and "AllCaps" in k[9]
    assert k[10] == ["LineBreak"] and k[11] == ["Whitespace"]
    assert kinds(["o", "'", "er"])[1] == ["Apostrophe"]  # between letters: an apostrophe
    assert kinds([" '", " Tis"])[0] == ["Quote"]  # before a space: a quotation mark
    assert punctuation_kinds("),") == ["ClosingBracket", "Comma"]


def test_special_tokens_get_no_kind():
    assert token_kinds(["<|im_start|>", "Hi"])[0] == ([], None, None)


def test_class_lists_form_a_hierarchy_under_lexical_class():
    names = {n: ps for n, _, ps in lexical_classes()}
    assert names["LexicalClass"] == ()
    seen = set()
    for n, _, ps in lexical_classes():  # parents come first
        assert all(p in seen for p in ps), n
        seen.add(n)
    assert names["Preposition"] == ("FunctionWord",) and names["FunctionWord"] == ("WordClass",)
    assert "with" in FUNCTION_CLASSES["Preposition"][2].split()
    fw = function_words()
    assert set(fw["that"]) >= {"Determiner", "Pronoun", "RelativeWord", "SubordinatingConjunction"}


def test_form_candidates_count_words_and_punctuation_runs():
    got = form_candidates(["The cat (a pet) sat. The dog sat."] * 30, n_forms=3)
    assert got[:2] == ["the", "sat"] and len([g for g in got if g.isalpha()]) == 3
    assert ")" in got and "(" in got and "." in got


def test_backoff_kinds_of_a_window_seen_again_are_the_same():
    from neurolabel.ontology import lexical

    window = ("The", " eleph", "ant", " ran", " with", " (", "it", ")", "\n")
    lexical._WINDOW_MEMO.clear()
    first = lexical.backoff_kinds(window)
    assert window in lexical._WINDOW_MEMO
    again = lexical.backoff_kinds(list(window))  # a list of the same tokens finds the window too
    assert again == first and again is not first
    again.append(("x",))  # the caller's list is its own
    assert lexical.backoff_kinds(window) == first
    lexical._WINDOW_MEMO.clear()
    lexical._BACKOFF_MEMO.clear()
    assert lexical.backoff_kinds(window) == first  # computed afresh: the same
    assert "Preposition" in first[4] and "WordContinuationPiece" in first[2]
