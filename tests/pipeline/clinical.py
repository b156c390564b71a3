"""Clinical sentences over the project's clinical example ontology (``pipeline/examples/clinical.ttl``):
templates filled with the preferred and alternative labels of its classes, so planted units can fire
on words under its classes and a labelling run over that ontology can find them again."""

from __future__ import annotations

import random
from pathlib import Path

import neurolabel.pipeline

CLINICAL_TTL = Path(neurolabel.pipeline.__file__).parent / "examples" / "clinical.ttl"
"""The clinical example ontology (Turtle, SKOS labels)."""

IRI = "https://w3id.org/neurolabel/clinical#"

_TEMPLATES = (
    "The patient presented with {SignOrSymptom} and {SignOrSymptom} and was admitted to the {HealthcareSetting}.",
    "She was started on {Drug} for {Disease} after the {Procedure}.",
    "A {ImagingProcedure} of the {Organ} showed no sign of {Disease}.",
    "The {HealthcareProvider} ordered a {LaboratoryTest} and prescribed {Drug}.",
    "He reported {Pain} in the {BodyRegion} and was given {Analgesic} twice a day.",
    "After the {SurgicalProcedure} the wound was clean and the {Bone} had healed.",
    "Her history includes {Disease}, treated with {Drug} and {TherapeuticProcedure}.",
    "In the {HealthcareSetting} the {HealthcareProvider} checked the {BloodVessel} and the {Joint}.",
    "The {Antibiotic} was stopped because of {SignOrSymptom} on the third day.",
    "We discussed {Disease} with the family and planned a {DiagnosticProcedure} next week.",
)


def clinical_sentences(n: int = 1500, seed: int = 0) -> list[str]:
    """``n`` sentences from the templates, each slot filled with a label (preferred or alternative)
    of a class under the slot's class."""
    from neurolabel.ontology.load import load_ontology

    onto = load_ontology(CLINICAL_TTL)
    rng = random.Random(seed)
    words: dict[str, list[str]] = {}

    def pick(slot: str) -> str:
        if slot not in words:
            cls = onto.find(IRI + slot)
            words[slot] = [lab for c in onto.descendants(cls) for lab in onto.labels[int(c)]]
        return rng.choice(words[slot])

    out = []
    for _ in range(n):
        template = rng.choice(_TEMPLATES)
        out.append(template.format_map(_Slots(pick)))
    return out


class _Slots(dict):
    def __init__(self, pick) -> None:
        super().__init__()
        self._pick = pick

    def __missing__(self, key: str) -> str:
        return self._pick(key)
