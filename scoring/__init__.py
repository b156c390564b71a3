"""neurolabel scoring package."""
