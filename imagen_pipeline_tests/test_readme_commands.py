"""What README command 1 does: `dagster job execute` with the example run config."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from PIL import Image

from imagen_pipeline_tests.fixtures.imagen import REPO_ROOT, subprocess_env


def test_dagster_job_execute_with_example_config_writes_png_and_sidecar(tmp_path: Path) -> None:
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    completed = subprocess.run(
        [
            "dagster", "job", "execute", "-m", "imagen_pipeline.definitions",
            "-j", "generate_image", "-c", str(REPO_ROOT / "examples" / "generate.yaml"),
        ],
        cwd=tmp_path,
        env=subprocess_env(DAGSTER_HOME=str(dagster_home)),
        capture_output=True,
        text=True,
        timeout=180,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    images = list((tmp_path / "output").glob("*.png"))
    assert len(images) == 1
    assert images[0].with_suffix(".json").is_file()
    with Image.open(images[0]) as image:
        assert image.size == (1344, 768)
    # The console shows Dagster's run events as Dagster prints them (RUN_SUCCESS is a DEBUG
    # event: an instance with `python_log_level: INFO` would hide it).
    assert "RUN_SUCCESS" in completed.stderr + completed.stdout
