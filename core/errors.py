"""Exceptions with messages a user can act on. Never return placeholder values instead."""


class NeurolabelError(Exception):
    """Base class of every error neurolabel raises on purpose."""


class ConfigError(NeurolabelError):
    """A setting, option or plugin tag is wrong or missing."""


class ModelError(NeurolabelError):
    """A target model cannot be loaded, or a layer/unit does not exist."""


class CorpusError(NeurolabelError):
    """A corpus is missing, empty or not text."""


class OntologyError(NeurolabelError):
    """An ontology file is missing, malformed or empty."""


class LMError(NeurolabelError):
    """A language-model backend failed (dead endpoint, bad answer, misconfiguration)."""


class LMCapabilityError(LMError):
    """A backend or endpoint does not offer what was asked (e.g. prompt logprobs through
    ``echo`` + ``logprobs`` on ``/completions``); callers fall back to another method."""


class ExplanationError(NeurolabelError):
    """An explainer could not produce an explanation (e.g. unparseable LLM answer)."""


class ScoringError(NeurolabelError):
    """A simulation or score could not be computed."""


class StorageError(NeurolabelError):
    """Bad data offered to the label database, or a database that cannot be used."""
