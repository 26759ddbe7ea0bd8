"""The mock backend: deterministic Pillow images, simulated latency and failures.

Same (prompt, negative, seed, size, model) gives the same pixels; any difference gives
different ones. With source images it transforms the first one instead (resized to the
output size, tinted by the seed, only inside the mask when there is one), so a test can see
the source was used. It can serialize generations across processes with a lock file (to act
like a single GPU), fail the first attempts transiently or every attempt permanently, and
append one JSON line per call to a log so tests and benchmarks can count backend calls.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import random
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops, ImageDraw
from pydantic import Field

from imagen_pipeline.backends.contract import (
    MAX_SEED,
    GenerationContext,
    GenerationMetadata,
    GenerationRequest,
    GenerationResult,
    ImageBackend,
    ImageFacts,
)
from imagen_pipeline.backends.pricing import FREE, Price
from imagen_pipeline.backends.progress import Progress
from imagen_pipeline.backends.sources import SOURCE_MODES, SourceImage, SourceSupport
from imagen_pipeline.errors import PermanentBackendError, TransientBackendError


class MockBackend(ImageBackend):
    """Deterministic local images for development, tests and benchmarks; costs nothing."""

    model: str = Field(default="mock-v1", description="Model name reported in metadata.")
    default_steps: int = Field(default=20, ge=1, description="Steps reported when none given.")
    latency_s: float = Field(default=0.0, ge=0, description="Simulated generation time.")
    serial_lock: str | None = Field(
        default=None,
        description="Lock file path; when set, generations run one at a time across "
        "processes, like a single GPU.",
    )
    fail_transient_attempts: int = Field(
        default=0,
        ge=0,
        description="Fail the first N attempts of each step with a transient error.",
    )
    fail_permanent: str | None = Field(
        default=None, description="When set, every call fails permanently with this message."
    )
    calls_log: str | None = Field(
        default=None, description="Append one JSON line per backend call to this file."
    )
    cost_usd: float = Field(default=0.0, ge=0, description="Cost reported per image.")
    max_source_images: int = Field(
        default=4,
        ge=0,
        description="Most source images a request may send (edit and img2img, a mask); "
        "0: text only, like an adapter without image input.",
    )

    def source_support(self) -> SourceSupport:
        """Up to ``max_source_images`` sources, both modes (edit by default) and a mask."""
        if not self.max_source_images:
            return SourceSupport()
        return SourceSupport(
            max_images=self.max_source_images,
            modes=SOURCE_MODES,
            default_mode="edit",
            mask=True,
        )

    def generate(self, request: GenerationRequest, context: GenerationContext) -> GenerationResult:
        """Render the image, honouring the simulated latency and failures."""
        started = time.monotonic()
        seed = request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1)
        self._log_call(request, context, seed)
        if self.fail_permanent:
            message = f"mock backend rejected the request: {self.fail_permanent}"
            raise PermanentBackendError(message, public=message)
        if context.attempt < self.fail_transient_attempts:
            raise TransientBackendError(
                f"mock backend simulated a transient failure (attempt {context.attempt + 1} "
                f"of {self.fail_transient_attempts} failing)"
            )
        steps = request.steps or self.default_steps
        with self._gpu_slot():
            self._sample(steps, context, started)
            if request.sources:
                image = transform_source(request, seed)
            else:
                image = render_image(request, seed, self.model)
        return GenerationResult(
            image=image,
            facts=ImageFacts(format="PNG", width=request.width, height=request.height),
            metadata=GenerationMetadata(
                model=self.model,
                seed=seed,
                steps=steps,
                latency_s=round(time.monotonic() - started, 4),
                cost_usd=self.price().usd,
                price_source=self.price().source,
                price_note=self.price().note,
            ),
        )

    def _sample(self, steps: int, context: GenerationContext, started: float) -> None:
        """Spend ``latency_s`` in ``steps`` equal parts, reporting each as a sampler step."""
        if not self.latency_s:
            return
        for step in range(1, steps + 1):
            time.sleep(self.latency_s / steps)
            if context.progress is not None:
                context.progress(
                    Progress(
                        fraction=step / steps,
                        node_id="sampler",
                        node_class="MockSampler",
                        step=step,
                        steps=steps,
                        elapsed_s=time.monotonic() - started,
                    )
                )

    def estimate_price(self, request: GenerationRequest) -> Price:
        """The configured per-image cost (free by default)."""
        return self.price()

    def price(self) -> Price:
        """``cost_usd`` from the config block, or free."""
        if not self.cost_usd:
            return FREE
        return Price(self.cost_usd, "config", "cost_usd of the mock block")

    @contextlib.contextmanager
    def _gpu_slot(self) -> Iterator[None]:
        if not self.serial_lock:
            yield
            return
        lock_path = Path(self.serial_lock)
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _log_call(self, request: GenerationRequest, context: GenerationContext, seed: int) -> None:
        if not self.calls_log:
            return
        entry: dict[str, Any] = {
            "at": datetime.now(UTC).isoformat(),
            "run_id": context.run_id,
            "attempt": context.attempt,
            "variation": context.variation,
            "prompt": request.prompt,
            "seed": seed,
            "width": request.width,
            "height": request.height,
        }
        if request.sources:
            entry["sources"] = [source.sha256 for source in request.sources]
            entry["mode"] = request.mode
            entry["mask"] = request.mask.sha256 if request.mask else None
        path = Path(self.calls_log)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, ensure_ascii=False) + "\n")


def render_image(request: GenerationRequest, seed: int, model: str) -> bytes:
    """Deterministic PNG for (prompt, negative, seed, size, model)."""
    key = "\x00".join(
        [
            request.prompt,
            request.negative,
            str(seed),
            str(request.width),
            str(request.height),
            model,
        ]
    )
    rng = random.Random(hashlib.sha256(key.encode("utf-8")).digest())

    def color() -> tuple[int, int, int]:
        return (rng.randrange(256), rng.randrange(256), rng.randrange(256))

    width, height = request.width, request.height
    mask = Image.linear_gradient("L").rotate(rng.randrange(360)).resize((width, height))
    image = Image.composite(
        Image.new("RGB", (width, height), color()), Image.new("RGB", (width, height), color()), mask
    )
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        radius = rng.randrange(max(2, min(width, height) // 4))
        draw.ellipse((x0 - radius, y0 - radius, x0 + radius, y0 + radius), fill=color())
    draw.text((8, 8), request.prompt[:80], fill=color())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def _tint(request: GenerationRequest, seed: int) -> tuple[int, int, int]:
    digest = hashlib.sha256(f"{request.prompt}\x00{seed}".encode()).digest()
    return (digest[0], digest[1], digest[2])


def _opened(source: SourceImage, size: tuple[int, int], mode: str) -> Image.Image:
    with Image.open(source.path) as image:
        return image.convert(mode).resize(size)


def transform_source(request: GenerationRequest, seed: int) -> bytes:
    """Deterministic PNG from the first source: resized to the request's size and blended
    with a tint fixed by (prompt, seed), 30 % for ``edit`` (the default), ``strength`` for
    ``img2img`` (default 0.5); only inside the mask's white part when there is one."""
    size = (request.width, request.height)
    base = _opened(request.sources[0], size, "RGB")
    if request.mode == "img2img":
        share = 0.5 if request.strength is None else request.strength
    else:
        share = 0.3
    tinted = Image.blend(base, Image.new("RGB", size, _tint(request, seed)), share)
    if request.mask is not None:
        mask = _opened(request.mask, size, "L")
        tinted = Image.composite(tinted, base, mask)
    for other in request.sources[1:]:
        tinted = ImageChops.add(tinted, _opened(other, size, "RGB"), scale=2.0)
    buffer = io.BytesIO()
    tinted.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()
