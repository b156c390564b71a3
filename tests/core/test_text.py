"""The one token escaper and the readable token quoting."""

from neurolabel.core.text import quote_token, show_token


def test_show_token_makes_line_breaks_and_tabs_visible():
    assert show_token("a\tb\nc\r") == "a\\tb\\nc\\r"


def test_quote_token_keeps_word_initial_and_continuation_pieces_apart():
    assert quote_token(" with") == "“with”"
    assert quote_token("ing") == "“-ing”"
    assert quote_token(")") == "“)”"
    assert quote_token(" ") == "“␣”"
    assert quote_token("\n") == "“\\n”"
