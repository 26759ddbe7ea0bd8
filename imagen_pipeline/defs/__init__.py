"""The Dagster layer: resources, ops, jobs. Thin wrappers over the plain modules."""
