"""How a token string is shown to people and in prompts: one helper for every place that does it."""

from __future__ import annotations


def show_token(token: str) -> str:
    """``token`` on one line: newline, carriage return and tab made visible as ``\\n``, ``\\r``, ``\\t``
    (so a prompt's ``token<TAB>value`` lines stay unambiguous)."""
    return token.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def quote_token(token: str) -> str:
    """A token for a readable label, in quotes, with :func:`show_token`'s escapes: a word-initial
    token without its leading space (``" with"`` → ``“with”``); a letter or digit piece written
    right after the previous token with a leading hyphen (``"ing"`` → ``“-ing”``), so the two stay
    apart; a token of white space only as ``“␣”``."""
    shown = show_token(token)
    if shown.startswith(" ") and shown.strip():
        core = shown[1:]
    elif shown[:1].isalnum():
        core = "-" + shown
    else:
        core = shown
    if not core.strip():
        core = "␣" * max(1, len(core))
    return f"“{core}”"
