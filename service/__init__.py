"""neurolabel service package."""
