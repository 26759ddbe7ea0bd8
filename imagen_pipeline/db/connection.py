"""Connections to the database named by ``IMAGEN_DATABASE_URL``."""

from __future__ import annotations

import os

import psycopg

from imagen_pipeline.errors import ConfigError

DATABASE_URL_ENV = "IMAGEN_DATABASE_URL"


def database_url(explicit: str | None = None) -> str:
    """The explicit URL, else ``$IMAGEN_DATABASE_URL``, else a ConfigError."""
    url = explicit or os.environ.get(DATABASE_URL_ENV)
    if not url:
        raise ConfigError(f"{DATABASE_URL_ENV} is not set")
    return url


def connect(dsn: str | None = None, **kwargs: object) -> psycopg.Connection:
    """A connection with prepared statements off (Supabase transaction pooler)."""
    return psycopg.connect(database_url(dsn), prepare_threshold=None, connect_timeout=10, **kwargs)
