"""`imagen generate` as scripts call it: one path on stdout, errors on stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import dagster as dg
from PIL import Image

from imagen_pipeline_tests.fixtures.imagen import subprocess_env


def imagen(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["imagen", *args],
        cwd=cwd,
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_prints_exactly_one_existing_path_and_records_the_run(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    config_file = write_config()
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    completed = imagen(
        "generate", "a cat in a fishbowl", "--style", "blog-header", "--size", "512x256",
        "--seed", "9", "--steps", "4", "--negative", "dogs", "--config", str(config_file),
        cwd=tmp_path, DAGSTER_HOME=str(dagster_home),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert len(lines) == 1
    image_path = Path(lines[0])
    assert image_path.is_absolute() and image_path.is_file()
    assert image_path.parent == tmp_path / "out"
    with Image.open(image_path) as image:
        assert image.size == (512, 256)
    sidecar = json.loads(image_path.with_suffix(".json").read_text())
    assert sidecar["request"]["negative"] == "dogs"
    assert sidecar["result"]["steps"] == 4

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        run = instance.get_run_by_id(sidecar["dagster"]["run_id"])
        assert run is not None
        assert run.job_name == "generate_image"
        assert run.is_success
        assert run.tags["imagen/source"] == "cli"


def test_without_dagster_home_uses_state_folder(tmp_path: Path, isolated_env: Path) -> None:
    completed = imagen("generate", "a kite", "--size", "64x64", cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert Path(completed.stdout.strip()).parent == tmp_path / "output"
    assert (isolated_env / ".local" / "state" / "imagen" / "dagster" / "dagster.yaml").is_file()


def test_invalid_input_goes_to_stderr_with_exit_code_2(tmp_path: Path) -> None:
    completed = imagen("generate", "a kite", "--size", "huge", cwd=tmp_path)
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert "imagen: error: size: expected WIDTHxHEIGHT such as 1024x1024" in completed.stderr


def test_backend_failure_goes_to_stderr_with_exit_code_1(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    config_file = write_config(
        {"backends": {"mock": {"type": "mock", "fail_permanent": "no cats"}}}
    )
    completed = imagen("generate", "a cat", "--config", str(config_file), cwd=tmp_path)
    assert completed.returncode == 1
    assert completed.stdout == ""
    assert (
        "imagen: error: backend 'mock' (mock): mock backend rejected the request: no cats (run "
        in (completed.stderr)
    )


def test_config_from_imagen_config_env_var(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    config_file = write_config({"output": {"directory": str(tmp_path / "from-env")}})
    completed = imagen(
        "generate", "a kite", "--size", "64x64", cwd=tmp_path, IMAGEN_CONFIG=str(config_file)
    )
    assert completed.returncode == 0, completed.stderr
    assert Path(completed.stdout.strip()).parent == tmp_path / "from-env"


def test_count_prints_one_path_per_variation_each_with_its_own_seed(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    completed = imagen(
        "generate", "a heron", "--size", "64x64", "--seed", "41", "--count", "3",
        "--config", str(write_config()), cwd=tmp_path, DAGSTER_HOME=str(dagster_home),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    paths = [Path(line) for line in completed.stdout.splitlines()]
    assert len(paths) == 3 and len(set(paths)) == 3
    sidecars = [json.loads(path.with_suffix(".json").read_text()) for path in paths]
    assert [s["generation"]["variation"] for s in sidecars] == [0, 1, 2]
    assert [s["result"]["seed"] for s in sidecars] == [41, 42, 43]
    assert len({s["image"]["sha256"] for s in sidecars}) == 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [*(p.name for p in paths), *(p.with_suffix(".json").name for p in paths)]
    ), "no leftovers: no staging folder, no partial files"


def test_count_outside_1_to_8_is_refused_naming_the_field(tmp_path: Path) -> None:
    completed = imagen("generate", "a heron", "--count", "9", cwd=tmp_path)
    assert completed.returncode == 2
    assert "--count" in completed.stderr and "1<=x<=8" in completed.stderr


def test_one_generate_opens_imagen_yaml_once(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    """An audit hook counts every open of the config file in the whole command."""
    config_file = write_config()
    probe = (
        "import sys\n"
        f"config = {str(config_file)!r}\n"
        "opened = []\n"
        "def hook(event, args):\n"
        "    if event == 'open' and str(args[0]) == config:\n"
        "        opened.append(1)\n"
        "sys.addaudithook(hook)\n"
        "from imagen_pipeline.cli.main import cli\n"
        "try:\n"
        "    cli(['generate', 'a kite', '--size', '64x64', '--config', config])\n"
        "finally:\n"
        "    print('opened', len(opened), file=sys.stderr)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=subprocess_env(DAGSTER_HOME=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "opened 1\n" in completed.stderr


def test_image_starts_from_a_local_file_named_relative_to_the_working_folder(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    Image.new("RGB", (32, 32), (0, 0, 255)).save(tmp_path / "blue.png")
    completed = imagen(
        "generate", "the same, at dusk", "--image", "blue.png", "--mode", "img2img",
        "--strength", "0.2", "--size", "64x64", "--config", str(write_config()),
        cwd=tmp_path, DAGSTER_HOME=str(tmp_path),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    [line] = completed.stdout.splitlines()
    with Image.open(line) as image:
        red, _, blue = image.convert("RGB").getpixel((32, 32))
    assert blue > 150 and red < 100, "the mock kept most of the blue source"
    sources = json.loads(Path(line).with_suffix(".json").read_text())["sources"]
    assert sources["images"][0]["origin"] == f"file {tmp_path / 'blue.png'}"
    assert (sources["mode"], sources["strength"]) == ("img2img", 0.2)
    missing = imagen("generate", "x", "--image", "nosuch.png", cwd=tmp_path)
    assert missing.returncode == 2
    assert "--image: 'nosuch.png' is neither a file nor an imagen.images id" in missing.stderr
