"""Alembic migrations of the label database (run through ``storage.db.upgrade``)."""
