"""Dagster instance plumbing for production: storage classes named in dagster.yaml."""
