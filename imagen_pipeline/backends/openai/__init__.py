"""The OpenAI backend: GPT image models and DALL·E through OpenAI's image API.

``families`` holds what each model family accepts, ``request`` builds and checks one request
body, ``pricing`` turns tables and ``usage`` into dollars, ``client`` makes the HTTP call and
classifies its failures, and ``backend`` is the adapter that ties them together (see
docs/backends.md, section "OpenAI").
"""

from imagen_pipeline.backends.openai.backend import OpenAIImagesBackend

__all__ = ["OpenAIImagesBackend"]
