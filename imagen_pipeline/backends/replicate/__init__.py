"""The Replicate backend: FLUX (and other) models through Replicate's HTTP API.

``models`` names the model (reference, input style, price), ``inputs`` maps a request to the
model's input, ``client`` makes the API calls (source uploads included) and classifies
their failures, and ``backend`` is the adapter that ties them together (see
docs/backends.md, section "Replicate").
"""

from imagen_pipeline.backends.replicate.backend import ReplicateBackend

__all__ = ["ReplicateBackend"]
