"""Fixtures of the client tests: the service tests' tiny model and corpus."""

from tests.service.conftest import assets  # noqa: F401 - a fixture, shared
