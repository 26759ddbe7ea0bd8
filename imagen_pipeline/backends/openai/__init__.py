"""The OpenAI backend: gpt-image-2 through OpenAI's image API.

``models`` holds the models this adapter knows and the request rules of each, ``request``
builds and checks one request body, ``pricing`` turns token prices and ``usage`` into
dollars, ``client`` makes the HTTP call and classifies its failures, and ``backend`` is the
adapter that ties them together (see docs/backends.md, section "OpenAI").
"""

from imagen_pipeline.backends.openai.backend import OpenAIImagesBackend

__all__ = ["OpenAIImagesBackend"]
