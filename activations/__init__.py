"""neurolabel activations package."""
