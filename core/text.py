"""How a token string is shown to people and in prompts: one helper for every place that does it."""

from __future__ import annotations


def show_token(token: str) -> str:
    """``token`` on one line: newline, carriage return and tab made visible as ``\\n``, ``\\r``, ``\\t``
    (so a prompt's ``token<TAB>value`` lines stay unambiguous)."""
    return token.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def quote_token(token: str) -> str:
    """A token for a readable label: its text without the leading space a word-initial token
    carries, in quotes (``" with"`` → ``“with”``), with :func:`show_token`'s escapes; a token
    that is only white space is named (``“␣”``)."""
    shown = show_token(token)
    core = shown[1:] if shown.startswith(" ") and shown.strip() else shown
    if not core.strip():
        core = "␣" * max(1, len(core))
    return f"“{core}”"
