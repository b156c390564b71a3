"""Runs Ontolearn's CELOE on learning problems; executed by ``bench/concept_induction.py`` inside
the separate Ontolearn environment (``.venv-ontolearn``), never imported by neurolabel.

Usage: ``python bench/celoe_runner.py problems.json results.json``. ``problems.json`` is a list
of ``{"owl": path, "pos": [iri…], "neg": [iri…], "max_runtime": seconds}``; ``results.json``
gets, per problem, the best hypothesis (DL syntax), the individuals it covers among the
examples, CELOE's own quality, and the knowledge-base load and fit times.
"""

from __future__ import annotations

import json
import sys
import time


def main(src: str, dst: str) -> None:
    from ontolearn.knowledge_base import KnowledgeBase
    from ontolearn.learners import CELOE
    from ontolearn.learning_problem import PosNegLPStandard
    from owlapy.iri import IRI
    from owlapy.owl_individual import OWLNamedIndividual
    from owlapy.render import DLSyntaxObjectRenderer

    render = DLSyntaxObjectRenderer()
    problems = json.load(open(src))
    out = []
    for k, p in enumerate(problems):
        t0 = time.perf_counter()
        kb = KnowledgeBase(path=p["owl"])
        t1 = time.perf_counter()
        pos = {OWLNamedIndividual(IRI.create(i)) for i in p["pos"]}
        neg = {OWLNamedIndividual(IRI.create(i)) for i in p["neg"]}
        lp = PosNegLPStandard(pos=pos, neg=neg)
        model = CELOE(knowledge_base=kb, max_runtime=p.get("max_runtime", 5))
        model.fit(lp)
        t2 = time.perf_counter()
        node = model.best_hypotheses(n=1, return_node=True)
        concept = node.concept
        covered = {ind.str for ind in kb.individuals(concept)}
        examples = set(p["pos"]) | set(p["neg"])
        out.append({
            "expression": render.render(concept),
            "quality": float(node.quality),
            "covered": sorted(covered & examples),
            "load_s": t1 - t0,
            "fit_s": t2 - t1,
        })
        print(f"celoe {k + 1}/{len(problems)}: {out[-1]['expression']} q={node.quality:.3f} "
              f"fit {t2 - t1:.2f} s", file=sys.stderr, flush=True)
    json.dump(out, open(dst, "w"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
