"""The generate path, from what a user asks to a staged image, behind two entry points, one
per op that runs it (:mod:`.entry`):

- :func:`plan`: the run's one plan (the ``enrich_prompt`` op; also ``imagen generate`` and
  the queue's intake, before a run);
- :func:`make`: the generate step, everything else: the request's source images fetched,
  checked and staged, re-use of a job's earlier images, options and budget for this
  requester, the backend's call, its fallbacks, staging; with :class:`Step`, what the op
  hands it.

Two, not one, because the plan is an op of its own: it picks which generate op runs (the
backend's Dagster pool), tags the run before anything is spent, and is what a re-execution
from failure re-uses. They are imported on first use, so importing ``generate.setup`` to
load a config does not import the whole path.
"""

from typing import Any

__all__ = ["Step", "make", "plan"]


def __getattr__(name: str) -> Any:
    """The entry points, imported when first asked for."""
    if name in __all__:
        from imagen_pipeline.generate import entry

        return getattr(entry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
