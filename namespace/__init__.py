"""neurolabel: automated neuron labelling — record, explain, validate, store and serve.

Everything the distribution installs lives under this one namespace (this folder installs as
``neurolabel``; it is not named so in the repository, so that a checkout on ``sys.path`` never shadows
the installed mapping). The repository keeps the
product's top-level folders (``core/``, ``activations/``, ``ontology/``, ``explainers/``,
``scoring/``, ``lm/``, ``storage/``, ``service/``); the packaging maps each of them to
``neurolabel.<folder>`` (``pyproject.toml``, ``[tool.setuptools] package-dir``).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("neurolabel")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
