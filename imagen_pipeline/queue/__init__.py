"""The ``imagen.jobs`` queue: rows, state transitions and reconciliation with Dagster runs."""
