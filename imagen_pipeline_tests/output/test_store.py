"""Final names, sidecars, collisions and idempotent re-writes of staged images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from imagen_pipeline.backends.contract import GenerationContext
from imagen_pipeline.errors import OutputError
from imagen_pipeline.generate.planning import ImageSpec, plan_generation
from imagen_pipeline.generate.setup import parse_setup
from imagen_pipeline.generate.staging import GeneratedImage, run_generation
from imagen_pipeline.output.store import store_image

NAMING = "{date}_{slug}_{seed}"


def generate(
    out: Path, run_id: str = "run-1", prompt: str = "a red fox", seed: int = 5
) -> GeneratedImage:
    config = parse_setup({"output": {"directory": str(out)}})
    plan = plan_generation(
        ImageSpec(prompt=prompt, seed=seed, width=128, height=96, job_id=17), config
    )
    return run_generation(plan, config.backend("mock"), GenerationContext(run_id=run_id), out)


def test_stores_image_sidecar_and_text_chunks(tmp_path: Path) -> None:
    generated = generate(tmp_path)
    stored = store_image(generated, tmp_path, NAMING, True, "run-1")
    image_path = Path(stored.image_path)
    assert image_path.parent == tmp_path
    assert image_path.name.endswith("_a-red-fox_5.png")
    with Image.open(image_path) as image:
        assert image.size == (128, 96)
        assert image.text["imagen.prompt"] == "a red fox"
        assert image.text["imagen.seed"] == "5"
        assert image.text["imagen.job_id"] == "17"
        assert image.text["imagen.run_id"] == "run-1"
    sidecar = json.loads(Path(stored.sidecar_path or "").read_text())
    assert sidecar["request"]["prompt"] == "a red fox"
    assert sidecar["enriched"]["prompt"] == "a red fox"
    assert sidecar["result"]["seed"] == 5
    assert sidecar["image"]["sha256"] == stored.sha256
    assert sidecar["dagster"]["run_id"] == "run-1"
    assert not Path(generated.staged_path).exists()
    # Job 17 is not done yet: its generation stays recorded for a retried run to re-use.
    assert list((tmp_path / ".imagen-staging").iterdir()) == [
        tmp_path / ".imagen-staging" / "job-17.json"
    ]


def test_same_name_from_other_generation_gets_suffix(tmp_path: Path) -> None:
    first = store_image(generate(tmp_path, "run-a"), tmp_path, NAMING, True, "run-a")
    second = store_image(generate(tmp_path, "run-b"), tmp_path, NAMING, True, "run-b")
    assert Path(second.image_path).name == Path(first.image_path).name.replace(".png", "-2.png")
    assert Path(second.sidecar_path or "").name.endswith("-2.json")


def test_rewrite_of_same_generation_reuses_the_file(tmp_path: Path) -> None:
    generated = generate(tmp_path)
    staged = Path(generated.staged_path).read_bytes()
    first = store_image(generated, tmp_path, NAMING, True, "run-1")
    # A retried step finds the staged file gone and its own image in place.
    again = store_image(generated, tmp_path, NAMING, True, "run-2")
    assert again.image_path == first.image_path
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [Path(first.image_path).name]
    # Even with the staged file restored, the same generation is not written twice.
    Path(generated.staged_path).write_bytes(staged)
    third = store_image(generated, tmp_path, NAMING, False, "run-3")
    assert third.image_path == first.image_path
    assert len(list(tmp_path.glob("*.png"))) == 1


def test_missing_staged_file_without_finished_copy_is_a_clear_error(tmp_path: Path) -> None:
    generated = generate(tmp_path)
    Path(generated.staged_path).unlink()
    with pytest.raises(OutputError, match=r"staged image .* no longer exists"):
        store_image(generated, tmp_path, NAMING, True, "run-1")


def test_sidecar_can_be_disabled(tmp_path: Path) -> None:
    stored = store_image(generate(tmp_path), tmp_path, NAMING, False, "run-1")
    assert stored.sidecar_path is None
    assert list(tmp_path.glob("*.json")) == []


def test_output_path_that_is_a_file_is_an_output_error(tmp_path: Path) -> None:
    generated = generate(tmp_path)
    (tmp_path / "blocked").write_text("a file, not a folder")
    with pytest.raises(OutputError, match="cannot create output folder"):
        store_image(generated, tmp_path, "blocked/{slug}", True, "run-1")
