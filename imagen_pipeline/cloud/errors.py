"""Errors of cloud sync and row recording."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from imagen_pipeline.db.connection import DATABASE_URL_ENV
from imagen_pipeline.errors import SEE_THE_RUN, ImagenError


class CloudSyncError(ImagenError):
    """Storage or the imagen database failed; ``transient`` says whether a retry can help.

    Transient: unreachable, timed out, 5xx, rate limited. Permanent: missing bucket,
    rejected key, object too large, a path already holding another image.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient

    @property
    def public(self) -> str:
        """The image was made; what a web user may read about why it was not stored."""
        if self.transient:
            return "the image was made but could not be stored right now; retry the job later"
        return f"the image was made but could not be stored; {SEE_THE_RUN}"


@contextmanager
def database_errors(action: str, url_env: str = DATABASE_URL_ENV) -> Iterator[None]:
    """Turn operational database failures (unreachable, connection lost, deadlock) into a
    transient :class:`CloudSyncError`; libpq's messages name host and port, never a password.
    """
    try:
        yield
    except psycopg.OperationalError as error:
        detail = " ".join(str(error).split())
        raise CloudSyncError(
            f"imagen database (${url_env}) failed while {action}: {detail}",
            transient=True,
        ) from None
