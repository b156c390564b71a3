"""The lexical layer of the default ontology: classes that every token falls under, whatever it
names — its part of speech, its form, its spelling.

Classes (IRIs under :data:`LEXICAL_BASE`; all under ``LexicalClass``):

- **word classes** — ``WordClass`` with ``Noun``, ``Verb``, ``Adjective``, ``Adverb`` (the roots of
  WordNet's four hierarchies hang under them: ``entity.n.01 ⊑ Noun``, verb roots ⊑ their
  lexicographer file's class, e.g. ``verb.motion ⊑ Verb``; adjective heads ⊑ ``adj.all`` /
  ``adj.pert`` / ``adj.ppl`` ⊑ ``Adjective``; adverbs ⊑ ``Adverb``) and ``FunctionWord`` with the
  closed classes of :data:`FUNCTION_CLASSES` (hand-written lists below: prepositions,
  determiners ⊒ articles, pronouns ⊒ personal / possessive, conjunctions ⊒ coordinating /
  subordinating, auxiliaries ⊒ modal verbs, relative and interrogative words, negations,
  quantifiers, number words, function adverbs, interjections — early-modern forms such as
  *thou*, *hath*, *doth* included, since the default corpus holds Shakespeare). A word in several
  lists (*that*: determiner, pronoun, relative, subordinating conjunction) is in all of them.
- **orthographic kinds** — ``Orthography`` with ``Punctuation`` (opening / closing brackets,
  quotes, apostrophes, dashes, commas, sentence ends, colons and semicolons, other symbols),
  ``Number`` (digits), ``Capitalised``, ``AllCaps``, ``WholeWord``, ``WordPiece`` ⊒
  ``WordInitialPiece`` / ``WordContinuationPiece``, ``SuffixPiece`` (⊑ continuation piece; one
  class per suffix of :data:`SUFFIXES`, e.g. *-ing*), ``PrefixPiece`` (⊑ initial piece; one class
  per prefix of :data:`PREFIXES`), ``LineBreak``, ``Whitespace``. These are typed **per token**
  by :func:`token_kinds` from the token and its neighbours in the window: `` eleph`` + ``ants``
  is a word-initial piece followed by a continuation piece, ``'s`` carries an apostrophe.
- **token forms** — ``TokenForm`` with one class per frequent form (the lower-cased token text
  without its leading space: ``" With"`` and ``"with"`` are the form ``with``). Forms are the
  :data:`N_FORMS` most frequent words and the frequent punctuation runs of the default corpus's
  sources (WordNet glosses and examples, Shakespeare's works), every function word and every
  punctuation character. A form class is also under the function-word classes of its word
  (``form "with" ⊑ Preposition ⊑ FunctionWord ⊑ WordClass ⊑ LexicalClass``) and under the
  punctuation kind of its characters (``form ")" ⊑ ClosingBracket``). A token gets its form
  class when it is a whole word, or punctuation / digits.

The ``follows`` object property (:data:`FOLLOWS_IRI`) links a token to the token before it in
its window; concept induction learns existential restrictions over it
(``Preposition and (follows some Noun)``).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence
from urllib.parse import quote

LEXICAL_BASE = "https://w3id.org/neurolabel/lexical#"
"""Namespace of the lexical layer's class IRIs."""
FOLLOWS_IRI = LEXICAL_BASE + "follows"
"""The object property linking a token to the token right before it."""
N_FORMS = 4000
"""How many of the most frequent word forms get a class."""

FUNCTION_CLASSES: dict[str, tuple[str, tuple[str, ...], str]] = {
    # name: (label, parents, words)
    "Preposition": ("preposition", ("FunctionWord",),
                    "about above across after against along amid amidst among amongst around as at before behind "
                    "below beneath beside besides between betwixt beyond by concerning despite down during except "
                    "for from in inside into like near of off on onto out outside over past per regarding since "
                    "through throughout till to toward towards under underneath unlike until unto up upon via with "
                    "within without ere"),
    "Determiner": ("determiner", ("FunctionWord",),
                   "a an the this that these those each every either neither some any no another such what which "
                   "whatever whichever all both half several enough much many few little more most less least"),
    "Article": ("article", ("Determiner",), "a an the"),
    "Pronoun": ("pronoun", ("FunctionWord",),
                "someone somebody something anyone anybody anything everyone everybody everything nobody nothing "
                "none who whom whose which what whoever whatever this that these those one"),
    "PersonalPronoun": ("personal pronoun", ("Pronoun",),
                        "i me you he him she her it we us they them thou thee ye myself yourself himself herself "
                        "itself ourselves yourselves themselves thyself oneself"),
    "Possessive": ("possessive", ("Pronoun",), "my your his her its our their mine yours hers ours theirs thy thine"),
    "Conjunction": ("conjunction", ("FunctionWord",), ""),
    "CoordinatingConjunction": ("coordinating conjunction", ("Conjunction",), "and or but nor yet so for"),
    "SubordinatingConjunction": ("subordinating conjunction", ("Conjunction",),
                                 "although though because since unless while whilst whereas if whether when "
                                 "whenever where wherever after before until till once than that as lest"),
    "Auxiliary": ("auxiliary verb", ("FunctionWord",),
                  "be am is are was were been being have has had having do does did doing hath doth dost hast art "
                  "wert"),
    "ModalVerb": ("modal verb", ("Auxiliary",),
                  "can could may might must shall should will would ought shalt wilt canst couldst wouldst "
                  "shouldst mayst"),
    "RelativeWord": ("relative or interrogative word", ("FunctionWord",),
                     "who whom whose which that what where when why how whoever whatever wherein whereby whereof"),
    "Negation": ("negation", ("FunctionWord",), "not no never nor neither none nothing nobody cannot"),
    "Quantifier": ("quantifier", ("FunctionWord",),
                   "all any both each every either few many more most much neither no none several some enough half"),
    "NumberWord": ("number word", ("FunctionWord",),
                   "one two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty "
                   "hundred thousand million first second third"),
    "FunctionAdverb": ("function adverb", ("FunctionWord",),
                       "also very too just then there here now so only even still already again ever yet thus "
                       "hence therefore however indeed perhaps quite rather almost soon often always sometimes "
                       "thence hither thither whence"),
    "Interjection": ("interjection", ("FunctionWord",), "oh ah alas o yea nay aye hey ha"),
}
"""The closed word classes: name → (label, parent classes, the words, space-separated)."""

SUFFIXES: tuple[str, ...] = tuple(
    """ing ings ed er ers est ly s es ies ied ion ions tion tions ation ations sion ment ments ness ity
    ities al ally ial ical ic ics ous ious ive able ably ible ful less ism ist ists ize ized izes ise ised
    ance ence ant ants ent ary ory ery ship hood ward wards like y th en ish ure ures age""".split()
)
"""Word endings that get a suffix class when a word-final continuation piece is exactly one of them."""

PREFIXES: tuple[str, ...] = tuple(
    """un re in im dis en em non pre pro anti de ex sub super inter trans over under mis co con com
    counter semi mid out fore post multi auto micro""".split()
)
"""Word beginnings that get a prefix class when a word-initial piece is exactly one of them."""

_ORTHO: dict[str, tuple[str, tuple[str, ...]]] = {
    "Orthography": ("orthographic kind", ("LexicalClass",)),
    "Punctuation": ("punctuation", ("Orthography",)),
    "OpeningBracket": ("opening bracket", ("Punctuation",)),
    "ClosingBracket": ("closing bracket", ("Punctuation",)),
    "Quote": ("quotation mark", ("Punctuation",)),
    "Apostrophe": ("apostrophe", ("Punctuation",)),
    "Dash": ("dash or hyphen", ("Punctuation",)),
    "Comma": ("comma", ("Punctuation",)),
    "SentenceEnd": ("full stop, question or exclamation mark", ("Punctuation",)),
    "ColonOrSemicolon": ("colon or semicolon", ("Punctuation",)),
    "Symbol": ("other symbol", ("Punctuation",)),
    "Number": ("number (digits)", ("Orthography",)),
    "Capitalised": ("capitalised word", ("Orthography",)),
    "AllCaps": ("all-caps word", ("Orthography",)),
    "WholeWord": ("whole word (one token)", ("Orthography",)),
    "WordPiece": ("piece of a word", ("Orthography",)),
    "WordInitialPiece": ("word-initial piece", ("WordPiece",)),
    "WordContinuationPiece": ("word-continuation piece", ("WordPiece",)),
    "SuffixPiece": ("suffix piece", ("WordContinuationPiece",)),
    "PrefixPiece": ("prefix piece", ("WordInitialPiece",)),
    "LineBreak": ("line break", ("Orthography",)),
    "Whitespace": ("whitespace", ("Orthography",)),
}
_TOP: dict[str, tuple[str, tuple[str, ...]]] = {
    "LexicalClass": ("lexical class", ()),
    "WordClass": ("part of speech", ("LexicalClass",)),
    "Noun": ("noun", ("WordClass",)),
    "Verb": ("verb", ("WordClass",)),
    "Adjective": ("adjective", ("WordClass",)),
    "Adverb": ("adverb", ("WordClass",)),
    "FunctionWord": ("function word", ("WordClass",)),
    "TokenForm": ("token form", ("LexicalClass",)),
}
_PUNCT_KIND = {
    **{c: "OpeningBracket" for c in "([{<"},
    **{c: "ClosingBracket" for c in ")]}>"},
    **{c: "Quote" for c in "\"“”«»`"},
    **{c: "Dash" for c in "-–—"},
    ",": "Comma",
    **{c: "SentenceEnd" for c in ".!?"},
    **{c: "ColonOrSemicolon" for c in ":;"},
}
_APOSTROPHES = "'’‘"
_SPACE_MARKS = str.maketrans({"Ġ": " ", "▁": " ", "Ċ": "\n", "ĉ": "\t"})
_SPECIAL = re.compile(r"^<[|/]?[A-Za-z_]+[|]?>$")
_FORM_TOKEN = re.compile(r"[A-Za-z]+|[0-9]+|[^\sA-Za-z0-9]+")


def lexical_classes() -> list[tuple[str, str, tuple[str, ...]]]:
    """The fixed classes of the layer (no forms, suffixes, prefixes): ``(name, label, parents)``,
    parents before children."""
    out = [(n, lab, ps) for n, (lab, ps) in _TOP.items()]
    out += [(n, lab, ps) for n, (lab, ps) in _ORTHO.items()]
    out += [(n, lab, ps) for n, (lab, ps, _) in FUNCTION_CLASSES.items()]
    return out


def function_words() -> dict[str, tuple[str, ...]]:
    """Word → the function-word classes it is listed in."""
    out: dict[str, list[str]] = {}
    for name, (_, _, words) in FUNCTION_CLASSES.items():
        for w in words.split():
            out.setdefault(w, []).append(name)
    return {w: tuple(v) for w, v in out.items()}


def form_iri(form: str) -> str:
    """IRI of the class of token form ``form``."""
    return LEXICAL_BASE + "form-" + quote(form, safe="")


def punctuation_kinds(text: str) -> list[str]:
    """The punctuation kinds of the characters of ``text`` (an apostrophe counts as a quote)."""
    kinds: list[str] = []
    for ch in text:
        k = _PUNCT_KIND.get(ch)
        if k is None:
            if ch in _APOSTROPHES:
                k = "Quote"
            elif ch in string.punctuation or (not ch.isalnum() and not ch.isspace()):
                k = "Symbol"
        if k is not None and k not in kinds:
            kinds.append(k)
    return kinds


def form_candidates(texts: Sequence[str], *, n_forms: int = N_FORMS, min_punct: int = 20) -> list[str]:
    """The frequent forms of ``texts``: the ``n_forms`` most frequent lower-cased words and
    numbers, and the punctuation runs seen at least ``min_punct`` times (most frequent first)."""
    from collections import Counter

    words: Counter[str] = Counter()
    punct: Counter[str] = Counter()
    for text in texts:
        for m in _FORM_TOKEN.finditer(text):
            s = m.group()
            if s[0].isalnum():
                words[s.lower()] += 1
            else:
                punct[s] += 1
    out = [w for w, _ in words.most_common(n_forms)]
    out += [p for p, c in punct.most_common() if c >= min_punct and len(p) <= 3]
    return out


@dataclass(frozen=True)
class LexicalLayer:
    """Lookup tables from token text to the lexical layer's class ids, and the WordNet data
    the annotator needs to choose a word's part of speech."""

    kinds: Mapping[str, int]
    """Fixed class name (``"Preposition"``, ``"ClosingBracket"``, ``"Noun"``…) → class id."""
    forms: Mapping[str, int]
    """Token form (lower case, no leading space) → its class id."""
    function_words: Mapping[str, tuple[int, ...]]
    """Function word → its function-word class ids."""
    suffixes: Mapping[str, int]
    """Suffix → class id of its suffix piece class."""
    prefixes: Mapping[str, int]
    """Prefix → class id of its prefix piece class."""
    class_pos: Any = None
    """Per class id: the WordNet part of speech of its synset (index into ``"nvar"``), -1 for
    classes that are no synset (``numpy.int8`` array)."""
    tag_counts: Mapping[str, tuple[int, int, int, int]] = field(default_factory=dict)
    """WordNet lemma → SemCor tag counts of its senses as a noun, verb, adjective, adverb (only
    lemmas with a non-zero count are listed)."""
    pos_exceptions: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    """Irregular form → ``(part of speech, base form)`` pairs (WordNet's ``*.exc`` files)."""

    def senses(self, lexicon: Mapping[str, tuple[int, ...]], lemma: str, pos: str) -> tuple[int, ...]:
        """The synsets of ``lemma`` in part of speech ``pos`` (``n v a r``), WordNet's sense order."""
        p = "nvar".index(pos)
        return tuple(c for c in lexicon.get(lemma, ()) if self.class_pos[c] == p)

    def tag_count(self, lemma: str, pos: str) -> int:
        """SemCor tag count of ``lemma`` as part of speech ``pos``."""
        got = self.tag_counts.get(lemma)
        return got["nvar".index(pos)] if got else 0

    def token_classes(self, tokens: Sequence[str]) -> list[tuple[int, ...]]:
        """For each token of a window: the lexical classes it falls under directly (its
        orthographic kinds, its form, its suffix/prefix class and its function-word classes)."""
        out = []
        for names, form, word in token_kinds(tokens):
            ids = [self.kinds[n] for n in names]
            if form is not None:
                f = self.forms.get(form)
                if f is not None:
                    ids.append(f)
            if word is not None:
                ids.extend(self.function_words.get(word, ()))
                if "SuffixPiece" in names:
                    ids.append(self.suffixes[word])
                elif "PrefixPiece" in names:
                    ids.append(self.prefixes[word])
            out.append(tuple(sorted(set(ids))))
        return out


def _text(token: str) -> str:
    if len(token) > 2 and _SPECIAL.match(token):
        return ""
    return token.translate(_SPACE_MARKS)


def token_kinds(tokens: Sequence[str]) -> list[tuple[list[str], str | None, str | None]]:
    """Per token: ``(orthographic kind names, form or None, word key or None)``. The form is the
    lower-cased text without surrounding spaces, for whole words and for tokens without letters;
    the word key is the lower-cased letters of a whole word (for function-word lookup) or of a
    suffix / prefix piece (then ``SuffixPiece`` / ``PrefixPiece`` is among the kinds)."""
    texts = [_text(t) for t in tokens]
    n = len(texts)
    out: list[tuple[list[str], str | None, str | None]] = []
    for i, text in enumerate(texts):
        kinds: list[str] = []
        s = text.strip()
        if not text:
            out.append((kinds, None, None))
            continue
        if "\n" in text:
            kinds.append("LineBreak")
        if not s:
            if "LineBreak" not in kinds:
                kinds.append("Whitespace")
            out.append((kinds, None, None))
            continue
        letters = any(c.isalpha() for c in s)
        prev = texts[i - 1] if i > 0 else ""
        nxt = texts[i + 1] if i + 1 < n else ""
        form: str | None = s.lower()
        word: str | None = None
        if any(c.isdigit() for c in s):
            kinds.append("Number")
        apostrophe_word = False
        for k in punctuation_kinds(s):
            if k == "Quote" and any(c in _APOSTROPHES for c in s):
                # an apostrophe inside or at the start of a word part ('s, n't, o'er), or between letters
                j = next(j for j, c in enumerate(s) if c in _APOSTROPHES)
                inside = (j + 1 < len(s) and s[j + 1].isalpha()) or (
                    len(s) == 1 and prev[-1:].isalpha() and nxt[:1].isalpha())
                if inside:
                    apostrophe_word = True
                    kinds.append("Apostrophe")
                    if any(c in "\"“”«»`" for c in s):
                        kinds.append("Quote")
                    continue
            kinds.append(k)
        if letters:
            starts_alpha = text[0].isalpha() or (text[0] in _APOSTROPHES and apostrophe_word)
            joins_prev = starts_alpha and prev[-1:].isalpha()
            joins_next = text[-1].isalpha() and nxt[:1].isalpha()
            if not joins_prev and not joins_next:
                kinds.append("WholeWord")
                word = "".join(c for c in s.lower() if c.isalpha() or c in _APOSTROPHES)
            elif joins_prev:
                kinds.append("WordContinuationPiece")
                form = None
                key = s.lower()
                if not joins_next and key in _SUFFIX_SET:
                    kinds.append("SuffixPiece")
                    word = key
            else:
                kinds.append("WordInitialPiece")
                form = None
                key = s.lower()
                if key in _PREFIX_SET:
                    kinds.append("PrefixPiece")
                    word = key
            alpha = [c for c in s if c.isalpha()]
            if not joins_prev:
                if len(alpha) >= 2 and all(c.isupper() for c in alpha):
                    kinds.append("AllCaps")
                elif alpha[0].isupper():
                    kinds.append("Capitalised")
        out.append((kinds, form, word))
    return out


_SUFFIX_SET = frozenset(SUFFIXES)
_PREFIX_SET = frozenset(PREFIXES)


def describe_layers(onto: Any) -> list[str]:
    """Lines for ``neurolabel ontology info``: the size of each layer of an ontology with a
    lexical layer (empty for other ontologies)."""
    layer = getattr(onto, "lexical", None)
    if layer is None:
        return []
    import numpy as np

    pos = np.asarray(layer.class_pos)
    n = [int((pos == p).sum()) for p in range(4)]
    n_fw = sum(1 for name in FUNCTION_CLASSES)
    n_ortho = len(_ORTHO)
    return [
        f"WordNet       {n[0]} noun, {n[1]} verb, {n[2]} adjective, {n[3]} adverb synsets",
        f"lexical       {len(layer.forms)} token forms, {n_fw} function-word classes "
        f"({len(layer.function_words)} words), {n_ortho} orthographic kinds, "
        f"{len(layer.suffixes)} suffix and {len(layer.prefixes)} prefix pieces",
        f"roles         follows ({FOLLOWS_IRI}: a token -> the token before it)",
    ]


_FUNCTION_WORDS: dict[str, tuple[str, ...]] | None = None


def backoff_kinds(tokens: Sequence[str]) -> list[tuple[str, ...]]:
    """Per token of a window: the names of the lexical classes it falls under that need no
    ontology to compute — its orthographic kinds (:func:`token_kinds`) and, for a whole word,
    its function-word classes (``"Preposition"``, …). What a token-list label backs off to for
    tokens it does not list (:mod:`scoring.token_simulator`)."""
    global _FUNCTION_WORDS
    window = tokens if tokens.__class__ is tuple else tuple(tokens)
    whole = _WINDOW_MEMO.get(window)  # a window seen before (windows recur across a run's neurons)
    if whole is not None:
        return list(whole)
    if _FUNCTION_WORDS is None:
        _FUNCTION_WORDS = function_words()
    # a token's kinds depend on its text and on whether the token before ends / the token after
    # starts with a letter (see token_kinds): memoised on those three
    texts = [_text(t) for t in tokens]
    n = len(tokens)
    out = []
    for i, t in enumerate(tokens):
        key = (t, i > 0 and texts[i - 1][-1:].isalpha(), i + 1 < n and texts[i + 1][:1].isalpha())
        got = _BACKOFF_MEMO.get(key)
        if got is None:
            names, _form, word = token_kinds(["a" if key[1] else "", t, "a" if key[2] else ""])[1]
            kinds = list(names)
            if word is not None and "WholeWord" in names:
                kinds.extend(_FUNCTION_WORDS.get(word, ()))
            got = tuple(kinds)
            if len(_BACKOFF_MEMO) >= _BACKOFF_MEMO_MAX:
                _BACKOFF_MEMO.clear()
            _BACKOFF_MEMO[key] = got
        out.append(got)
    if len(_WINDOW_MEMO) >= _WINDOW_MEMO_MAX:
        _WINDOW_MEMO.clear()
    _WINDOW_MEMO[window] = tuple(out)
    return out


_BACKOFF_MEMO: dict[tuple[str, bool, bool], tuple[str, ...]] = {}
_BACKOFF_MEMO_MAX = 200_000
_WINDOW_MEMO: dict[tuple[str, ...], tuple[tuple[str, ...], ...]] = {}
"""Each window's kinds (keyed by its tokens), then the memo starts afresh: :func:`backoff_kinds`
runs on every explain-split random window of every neuron (~0.14 ms a window token by token)."""
_WINDOW_MEMO_MAX = 16_384


def kind_label(name: str) -> str:
    """The readable label of a fixed lexical class (``"ClosingBracket"`` → ``"closing bracket"``)."""
    got = _TOP.get(name) or _ORTHO.get(name)
    if got is not None:
        return got[0]
    fc = FUNCTION_CLASSES.get(name)
    return fc[0] if fc is not None else name


def token_form(token: str) -> str:
    """A token's form: its text lower-cased, without surrounding white space (``" With"`` and
    ``"with"`` are the form ``with``); white space and special tokens have the empty form."""
    return _text(token).strip().lower()
