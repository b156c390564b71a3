"""neurolabel explainers package."""
