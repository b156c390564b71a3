"""The keyword-only query functions of the label database, in one namespace.

They take an open ``session`` and do not commit, except :func:`save_neuron_records`, which
commits after every batch unless told otherwise (see its docstring). Implementations live in
:mod:`storage.writes`, :mod:`storage.reads`, :mod:`storage.search` and :mod:`storage.transfer`.
"""

from __future__ import annotations

from neurolabel.storage.reads import (
    best_label,
    explained_neurons,
    failed_neurons,
    get_neuron,
    list_models,
    list_neurons,
    load_neuron_record,
    model_overview,
    recorded_neurons,
)
from neurolabel.storage.labels import best_labels_page, labels_version
from neurolabel.storage.search import search_labels
from neurolabel.storage.transfer import export_file, export_rows, import_file
from neurolabel.storage.writes import (
    ensure_models,
    ensure_neurons,
    record_failures,
    save_explanations,
    save_neuron_records,
    upsert_model,
)

__all__ = [
    "best_label",
    "best_labels_page",
    "ensure_models",
    "ensure_neurons",
    "export_file",
    "export_rows",
    "explained_neurons",
    "failed_neurons",
    "get_neuron",
    "import_file",
    "labels_version",
    "list_models",
    "list_neurons",
    "load_neuron_record",
    "model_overview",
    "record_failures",
    "recorded_neurons",
    "save_explanations",
    "save_neuron_records",
    "search_labels",
    "upsert_model",
]
