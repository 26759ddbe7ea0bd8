"""Errors of Supabase Storage and cloud sync (database failures are
:mod:`imagen_pipeline.db.errors`)."""

from __future__ import annotations

from imagen_pipeline.errors import SEE_THE_RUN, MaybeTransientError


class CloudSyncError(MaybeTransientError):
    """Storage failed, or an image's object is held by another; ``transient`` says whether a
    retry can help.

    Transient: unreachable, timed out, 5xx, rate limited. Permanent: missing bucket,
    rejected key, object too large, a path already holding another image. The image was
    made either way, and what a web user reads says so.
    """

    public_transient = "the image was made but could not be stored right now; retry the job later"
    public_summary = f"the image was made but could not be stored; {SEE_THE_RUN}"
