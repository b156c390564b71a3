"""Mapping the tokens of a text window to the ontology classes they mention.

Steps, per window:

1. Subword tokens are joined back into words: the window's token strings are concatenated
   (``Ġ``/``▁`` read as a space, ``Ċ`` as a newline) and words are the runs of letters; a token
   belongs to every word it overlaps, so ``[" eleph", "ants"]`` both get *elephant*.
2. Multi-word lexicon entries are matched first, greedily, longest first (``ice cream``,
   ``New York``), over words separated only by a space or hyphen.
3. Each word is lemmatised with WordNet's morphy rules (irregular forms from the ``*.exc``
   files, then suffix rules ``-s``, ``-ies``, ``-ed``, ``-ing``, ``-er``…) against the ontology's
   lexicon. With the default ontology's lexical layer every part of speech is tried and the
   **part of speech is chosen by WordNet's tag counts**: of the candidate (part of speech,
   lemma) pairs, the one whose senses were tagged most often in SemCor wins (``saw`` → *see*, a
   verb; ``dogs`` → *dog*, a noun; ``building`` → *build*, a verb); ties go to the word's own
   form over an inflection, then to noun, verb, adjective, adverb. Without tag counts (user
   ontologies) only the noun rules apply.
4. The sense is the most frequent one of that part of speech (WordNet's sense order);
   ``senses=k`` keeps the k most frequent instead. Function words (the ontology's ``blocked``
   set) get no lexicon class.
5. With a lexical layer (:mod:`ontology.lexical`), every token also gets its orthographic kinds,
   its token form, its suffix / prefix piece class and its function-word classes — so every
   token that is not pure whitespace or a special token carries at least one class.

Annotations are cached per window (keyed by the tuple of token strings), so labelling many
neurons over the same corpus annotates each window once; :meth:`Annotator.save_cache` /
:meth:`Annotator.load_cache` keep that cache across processes.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from pathlib import Path
from typing import Iterable, Sequence

from neurolabel.core.errors import OntologyError
from neurolabel.ontology.model import Ontology

log = logging.getLogger(__name__)

_WORD = re.compile(r"[A-Za-z]+")
_JOINER = re.compile(r"^[ \-]?$")
_NOUN_RULES = (
    ("s", ""),
    ("ses", "s"),
    ("ves", "f"),
    ("xes", "x"),
    ("zes", "z"),
    ("ches", "ch"),
    ("shes", "sh"),
    ("men", "man"),
    ("ies", "y"),
)
_RULES = {
    "n": _NOUN_RULES,
    "v": (("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")),
    "a": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "r": (),
}
_POS_ORDER = ("n", "v", "a", "r")
_SPACE_MARKS = str.maketrans({"Ġ": " ", "▁": " ", "Ċ": "\n", "ĉ": "\t"})
_SPECIAL = re.compile(r"^<[|/]?[A-Za-z_]+[|]?>$")


def token_text(token: str) -> str:
    """A token string as plain text (byte-level BPE and sentencepiece space marks undone;
    special tokens such as ``<|im_start|>`` become spaces of the same length)."""
    if len(token) > 2 and _SPECIAL.match(token):
        return " " * len(token)
    return token.translate(_SPACE_MARKS)


class Annotator:
    """Maps tokens to ontology classes (see the module docstring for the steps)."""

    def __init__(self, ontology: Ontology, *, senses: int = 1, max_phrase: int = 3,
                 cache_size: int = 500_000, parts_of_speech: str = "nvar") -> None:
        self.ontology = ontology
        """The ontology whose lexicon and classes are used."""
        self.senses = senses
        """How many of a word's most frequent senses to keep (1 = most-frequent-sense baseline)."""
        self.max_phrase = max_phrase
        """Longest multi-word lexicon entry matched, in words."""
        self.cache_size_limit = cache_size
        """Most windows kept in the annotation cache (oldest dropped first)."""
        self.parts_of_speech = parts_of_speech
        """WordNet parts of speech a word may be read as (``"n"``: nouns only, as the noun-only
        ontology read words; planted units use that)."""
        self._cache: dict[tuple[str, ...], tuple[tuple[int, ...], ...]] = {}
        self._mention_cache: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._word_memo: dict[str, tuple[int, ...]] = {}
        self._phrase_starts: frozenset[str] | None = None

    @classmethod
    def from_defaults(cls) -> "Annotator":
        """An annotator over the default WordNet ontology."""
        from neurolabel.ontology.build import default_ontology

        return cls(default_ontology())

    # ---- words and lemmas -----------------------------------------------------------------
    def lemma(self, word: str) -> str | None:
        """The lexicon entry ``word`` is an inflection of, if any (WordNet morphy: over every part
        of speech, chosen by tag counts, when the ontology has a lexical layer; else over nouns)."""
        w = " ".join(word.lower().replace("_", " ").replace("-", " ").split())
        if not w:
            return None
        if self.ontology.lexical is not None and " " not in w:
            pl = self.pos_lemma(w)
            if pl is not None:
                return pl[1]
        lex = self.ontology.lexicon
        exc = self.ontology.exceptions.get(w)
        if w in lex:
            return w
        if exc is not None and exc in lex:
            return exc
        for suffix, repl in _NOUN_RULES:
            if w.endswith(suffix) and len(w) > len(suffix):
                cand = w[: len(w) - len(suffix)] + repl
                if cand in lex:
                    return cand
        return None

    def pos_lemma(self, word: str) -> tuple[str, str] | None:
        """``(part of speech, lemma)`` of a word by WordNet's tag counts (see the module
        docstring), or ``None``; needs the ontology's lexical layer."""
        layer = self.ontology.lexical
        if layer is None:
            return None
        w = " ".join(word.lower().replace("_", " ").replace("-", " ").split())
        lex = self.ontology.lexicon
        cands: list[tuple[str, str]] = [(p, b) for p, b in layer.pos_exceptions.get(w, ())]
        cands = [(p, b) for p, b in cands if p in self.parts_of_speech]
        for p in _POS_ORDER:
            if p not in self.parts_of_speech:
                continue
            cands.append((p, w))
            for suffix, repl in _RULES[p]:
                if w.endswith(suffix) and len(w) > len(suffix):
                    cands.append((p, w[: len(w) - len(suffix)] + repl))
        best, best_key = None, None
        for p, b in cands:
            if b not in lex or not layer.senses(lex, b, p):
                continue
            key = (layer.tag_count(b, p), b == w, -_POS_ORDER.index(p))
            if best_key is None or key > best_key:
                best, best_key = (p, b), key
        return best

    def classes_of_word(self, word: str) -> tuple[int, ...]:
        """The classes a single word names, most frequent sense first (memoised)."""
        got = self._word_memo.get(word)
        if got is None:
            got = ()
            if word.lower() not in self.ontology.blocked:
                if self.ontology.lexical is not None:
                    pl = self.pos_lemma(word)
                    if pl is not None and pl[1] not in self.ontology.blocked:
                        got = self.ontology.lexical.senses(self.ontology.lexicon, pl[1], pl[0])[: self.senses]
                else:
                    lem = self.lemma(word)
                    if lem is not None and lem not in self.ontology.blocked:
                        got = tuple(self.ontology.lexicon[lem][: self.senses])
            self._word_memo[word] = got
        return got

    @property
    def phrase_starts(self) -> frozenset[str]:
        """First words of the lexicon's multi-word entries (only these start a phrase match)."""
        if self._phrase_starts is None:
            self._phrase_starts = frozenset(k.split(" ", 1)[0] for k in self.ontology.lexicon if " " in k)
        return self._phrase_starts

    @staticmethod
    def words(tokens: Sequence[str]) -> list[tuple[str, list[int], int, int]]:
        """Words of a window: ``(word, token indices it spans, start, end)`` character offsets
        in the joined text."""
        starts: list[int] = []
        parts: list[str] = []
        pos = 0
        for t in tokens:
            s = token_text(t)
            starts.append(pos)
            parts.append(s)
            pos += len(s)
        text = "".join(parts)
        out: list[tuple[str, list[int], int, int]] = []
        ti = 0
        n = len(tokens)
        for m in _WORD.finditer(text):
            a, b = m.span()
            while ti + 1 < n and starts[ti + 1] <= a:
                ti += 1
            idx = []
            j = ti
            while j < n and starts[j] < b:
                if starts[j] + len(parts[j]) > a:
                    idx.append(j)
                j += 1
            out.append((m.group(), idx, a, b))
        return out

    # ---- annotation -----------------------------------------------------------------------
    def direct_classes(self, tokens: Sequence[str]) -> tuple[tuple[int, ...], ...]:
        """For each token, the classes it mentions directly (no ancestors); cached per window."""
        key = tuple(tokens)
        got = self._cache.get(key)
        if got is None:
            got = self._annotate(key)
            if len(self._cache) >= self.cache_size_limit:
                self._cache.pop(next(iter(self._cache)), None)
            self._cache[key] = got
        return got

    def annotate(self, tokens: Sequence[str], *, ancestors: bool = True) -> list[frozenset[int]]:
        """For each token, the class ids it mentions — with all their superclasses when
        ``ancestors`` (the default), else only the chosen senses. Names via
        ``ontology.label(c)`` / ``ontology.iri(c)``."""
        direct = self.direct_classes(tokens)
        if not ancestors:
            return [frozenset(d) for d in direct]
        onto = self.ontology
        memo: dict[tuple[int, ...], frozenset[int]] = {}
        out = []
        for d in direct:
            got = memo.get(d)
            if got is None:
                got = onto.closure(d) if d else frozenset()
                memo[d] = got
            out.append(got)
        return out

    def annotate_windows(
        self, windows: Iterable[Sequence[str]], *, progress: bool = False
    ) -> list[tuple[tuple[int, ...], ...]]:
        """Direct classes of every token of many windows (fills the cache)."""
        it = windows
        if progress:
            from tqdm import tqdm

            it = tqdm(list(windows), desc="annotating", unit="window")
        return [self.direct_classes(w) for w in it]

    def mentions(self, tokens: Sequence[str]) -> list[str]:
        """For each token, the word or phrase (as written) through which it names a class, or
        ``""`` (e.g. ``"New York"`` for both tokens of it); cached per window, as the classes are."""
        key = tuple(tokens)
        got = self._mention_cache.get(key)
        if got is None:
            texts = [""] * len(tokens)
            direct = self._annotate(key, texts)
            got = tuple(texts)
            for cache, value in ((self._mention_cache, got), (self._cache, direct)):
                if key not in cache and len(cache) >= self.cache_size_limit:
                    cache.pop(next(iter(cache)), None)
                cache[key] = value
        return list(got)

    def _annotate(self, tokens: tuple[str, ...], texts: list[str] | None = None) -> tuple[tuple[int, ...], ...]:
        words = self.words(tokens)
        result: list[set[int]] = [set() for _ in tokens]
        text = None
        i = 0
        while i < len(words):
            matched = 0
            if self.max_phrase > 1 and words[i][0].lower() in self.phrase_starts:
                if text is None:
                    text = "".join(token_text(t) for t in tokens)
                for k in range(min(self.max_phrase, len(words) - i), 1, -1):
                    group = words[i : i + k]
                    if not all(_JOINER.match(text[group[j][3] : group[j + 1][2]]) for j in range(k - 1)):
                        continue
                    phrase = " ".join(w[0] for w in group)
                    classes = self._phrase_classes(phrase)
                    if classes:
                        for w in group:
                            for ti in w[1]:
                                result[ti].update(classes)
                                if texts is not None:
                                    texts[ti] = text[group[0][2] : group[-1][3]]
                        matched = k
                        break
            if not matched:
                word, idx, _, _ = words[i]
                classes = self.classes_of_word(word)
                if classes:
                    for ti in idx:
                        result[ti].update(classes)
                        if texts is not None:
                            texts[ti] = word
                matched = 1
            i += matched
        layer = self.ontology.lexical
        if layer is not None:
            for r, extra in zip(result, layer.token_classes(tokens)):
                r.update(extra)
        return tuple(tuple(sorted(r)) for r in result)

    def _phrase_classes(self, phrase: str) -> tuple[int, ...]:
        key = "\x00" + phrase
        got = self._word_memo.get(key)
        if got is None:
            lem = self.lemma(phrase)
            got = () if lem is None or " " not in lem else tuple(self.ontology.lexicon[lem][: self.senses])
            self._word_memo[key] = got
        return got

    # ---- cache persistence ----------------------------------------------------------------
    @property
    def cache_size(self) -> int:
        """Number of windows whose annotation is cached."""
        return len(self._cache)

    def _cache_tag(self) -> tuple:
        return (self.ontology.name, self.ontology.n_classes, self.senses, self.max_phrase, self.parts_of_speech)

    def save_cache(self, path: Path) -> None:
        """Write the window-annotation cache to ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            pickle.dump({"tag": self._cache_tag(), "cache": self._cache}, f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)

    def load_cache(self, path: Path) -> int:
        """Merge a cache written by :meth:`save_cache`; returns the number of windows added.
        A cache made for another ontology or other settings raises :class:`OntologyError`."""
        path = Path(path)
        try:
            with open(path, "rb") as f:
                state = pickle.load(f)
        except (OSError, pickle.UnpicklingError, EOFError) as exc:
            raise OntologyError(f"{path}: cannot read the annotation cache: {exc}") from exc
        if state.get("tag") != self._cache_tag():
            raise OntologyError(
                f"{path}: annotation cache was made for {state.get('tag')}, not {self._cache_tag()}"
            )
        before = len(self._cache)
        self._cache.update(state["cache"])
        return len(self._cache) - before
