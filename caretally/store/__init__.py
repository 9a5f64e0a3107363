"""Persistence: the schema, opening databases, and migrations."""
