"""Errors of Supabase Storage and cloud sync (database failures are
:mod:`imagen_pipeline.db.errors`)."""

from __future__ import annotations

from imagen_pipeline.errors import SEE_THE_RUN, ImagenError


class CloudSyncError(ImagenError):
    """Storage failed, or an image's object is held by another; ``transient`` says whether a
    retry can help.

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
