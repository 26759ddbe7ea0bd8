"""Retention: deleting finished Dagster runs and stale staging records after an age."""
