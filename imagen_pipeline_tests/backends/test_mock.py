"""The mock backend: deterministic pixels, honoured size, simulated latency and failures."""

from __future__ import annotations

import io
import json
import threading
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from imagen_pipeline.backends.contract import GenerationContext, GenerationRequest
from imagen_pipeline.backends.mock import MockBackend
from imagen_pipeline.errors import PermanentBackendError, TransientBackendError


def request(
    prompt: str = "a cat", seed: int | None = 7, size: tuple[int, int] = (320, 200)
) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, width=size[0], height=size[1], seed=seed)


def pixels(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def same_pixels(a: bytes, b: bytes) -> bool:
    return (
        ImageChops.difference(pixels(a).convert("RGB"), pixels(b).convert("RGB")).getbbox() is None
    )


def test_same_inputs_same_pixels_and_size_is_honoured() -> None:
    backend = MockBackend()
    first = backend.generate(request(), GenerationContext(run_id="r1"))
    second = backend.generate(request(), GenerationContext(run_id="r2"))
    assert (pixels(first.image).format, pixels(first.image).size) == ("PNG", (320, 200))
    assert same_pixels(first.image, second.image)
    assert first.metadata.model == "mock-v1"
    assert first.metadata.seed == 7
    assert first.metadata.steps == 20
    assert first.metadata.cost_usd == 0.0


def test_different_prompt_or_seed_gives_different_pixels() -> None:
    backend = MockBackend()
    base = backend.generate(request(), GenerationContext(run_id="r"))
    other_prompt = backend.generate(request(prompt="a dog"), GenerationContext(run_id="r"))
    other_seed = backend.generate(request(seed=8), GenerationContext(run_id="r"))
    assert not same_pixels(base.image, other_prompt.image)
    assert not same_pixels(base.image, other_seed.image)


def test_missing_seed_is_picked_and_reported() -> None:
    result = MockBackend().generate(request(seed=None), GenerationContext(run_id="r"))
    assert isinstance(result.metadata.seed, int)
    again = MockBackend().generate(
        request(seed=result.metadata.seed), GenerationContext(run_id="r")
    )
    assert same_pixels(result.image, again.image)


def test_transient_failures_for_first_attempts_then_success(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    backend = MockBackend(fail_transient_attempts=2, calls_log=str(log))
    for attempt in (0, 1):
        with pytest.raises(TransientBackendError, match="simulated a transient failure"):
            backend.generate(request(), GenerationContext(run_id="r", attempt=attempt))
    backend.generate(request(), GenerationContext(run_id="r", attempt=2))
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [call["attempt"] for call in calls] == [0, 1, 2]
    assert {call["run_id"] for call in calls} == {"r"}


def test_permanent_failure_carries_message() -> None:
    backend = MockBackend(fail_permanent="content policy: no cats")
    with pytest.raises(PermanentBackendError, match="content policy: no cats"):
        backend.generate(request(), GenerationContext(run_id="r"))


def test_serial_lock_never_overlaps_generations(tmp_path: Path) -> None:
    backend = MockBackend(latency_s=0.2, serial_lock=str(tmp_path / "gpu.lock"))
    spans: list[tuple[datetime, datetime]] = []

    def work() -> None:
        started = datetime.now()
        backend.generate(request(size=(64, 64)), GenerationContext(run_id="r"))
        spans.append((started, datetime.now()))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Each generation holds the lock for latency_s, so 3 need at least 3 x 0.2 s in total.
    total = max(end for _, end in spans) - min(start for start, _ in spans)
    assert total.total_seconds() >= 0.6
