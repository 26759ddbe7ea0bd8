"""Alerts to the operator through one webhook: the payload ntfy, Slack and Discord accept
(``payload.py``), the POST that never logs the URL (``webhook.py``), dedupe and the rate
limit shared by every process in the imagen database (``store.py``), the ``Alerts`` callers
use (``notify.py``) and what a failed run alerts (``run_failures.py``)."""
