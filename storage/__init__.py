"""neurolabel storage package."""
