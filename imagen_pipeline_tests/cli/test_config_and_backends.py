"""`imagen config sample|validate` and `imagen backends`."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from imagen_pipeline.cli.config_cmd import sample_config_text
from imagen_pipeline.cli.main import cli
from imagen_pipeline_tests.fakes.comfyui_server import running_fake_comfyui
from imagen_pipeline_tests.fakes.loopback_http import closed_port
from imagen_pipeline_tests.fakes.openai_server import running_fake_openai
from imagen_pipeline_tests.fakes.replicate_server import running_fake_replicate
from imagen_pipeline_tests.fixtures.imagen import PRODUCTION_INSTANCE


def test_sample_validates_and_is_commented(tmp_path: Path) -> None:
    runner = CliRunner()
    sample = runner.invoke(cli, ["config", "sample"])
    assert sample.exit_code == 0
    assert sample.output.lstrip().startswith("#")
    path = tmp_path / "imagen.yaml"
    path.write_text(sample.output)
    validated = runner.invoke(cli, ["config", "validate", str(path)])
    assert validated.exit_code == 0, validated.output
    assert f"{path}: ok" in validated.output


def test_sample_write_creates_the_config_folder_of_a_fresh_home(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert not (isolated_env / ".config").exists()
    result = CliRunner().invoke(cli, ["config", "sample", "--write"])
    assert result.exit_code == 0, result.output
    written = isolated_env / ".config" / "imagen.yaml"
    assert result.output == f"wrote {written}\n"
    assert written.read_text(encoding="utf-8") == sample_config_text()
    validated = CliRunner().invoke(cli, ["config", "validate"])  # found without --config
    assert validated.exit_code == 0, validated.output
    assert f"{written.resolve()}: ok" in validated.output


def test_sample_write_honours_xdg_config_home(isolated_env: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["config", "sample", "--write"], env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    )
    assert result.exit_code == 0, result.output
    assert result.output == f"wrote {tmp_path / 'xdg' / 'imagen.yaml'}\n"
    assert not (isolated_env / ".config").exists()


def test_sample_write_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "folder" / "imagen.yaml"
    first = CliRunner().invoke(cli, ["config", "sample", "--write", str(target)])
    assert first.exit_code == 0, first.output
    assert first.output.splitlines() == [
        f"wrote {target}",
        f"imagen reads it with --config {target} or IMAGEN_CONFIG={target}",
    ]
    target.write_text("default_backend: mock\n", encoding="utf-8")

    refused = CliRunner().invoke(cli, ["config", "sample", "--write", str(target)])
    assert refused.exit_code == 2
    assert f"imagen: error: {target} already exists; add --force to replace it" in refused.output
    assert target.read_text(encoding="utf-8") == "default_backend: mock\n"

    forced = CliRunner().invoke(cli, ["config", "sample", "--write", str(target), "--force"])
    assert forced.exit_code == 0, forced.output
    assert forced.output.startswith(f"wrote {target}\n")
    assert target.read_text(encoding="utf-8") == sample_config_text()


def test_sample_force_without_write_is_refused() -> None:
    result = CliRunner().invoke(cli, ["config", "sample", "--force"])
    assert result.exit_code == 2
    assert "--force applies to --write only" in result.output


def test_validate_reports_file_key_path_and_allowed_values(
    write_config: Callable[..., Path],
) -> None:
    path = write_config({"default_backend": "gpu"})
    result = CliRunner().invoke(cli, ["config", "validate", str(path)])
    assert result.exit_code == 2
    assert (
        f"imagen: error: {path}: default_backend: 'gpu' is not a configured backend"
        in result.output
    )


def test_validate_refuses_a_retired_model_with_its_date_and_replacement(
    write_config: Callable[..., Path],
) -> None:
    path = write_config({"backends": {"oai": {"type": "openai", "model": "dall-e-3"}}})
    result = CliRunner().invoke(cli, ["config", "validate", str(path)])
    assert result.exit_code == 2
    assert (
        f"imagen: error: {path}: backends.oai.model: Value error, dall-e-3 was shut down by "
        "OpenAI on 2026-05-12; use gpt-image-2 instead"
    ) in result.output


def limits_only_instance(home: Path) -> Path:
    """A SQLite instance in ``home`` whose dagster.yaml has the production ``concurrency:``
    block (comments included); returns the file."""
    home.mkdir()
    dagster_yaml = home / "dagster.yaml"
    limits_block = PRODUCTION_INSTANCE.read_text(encoding="utf-8").split("concurrency:\n", 1)[1]
    dagster_yaml.write_text("concurrency:\n" + limits_block.split("\n\n", 1)[0] + "\n")
    return dagster_yaml


def test_limits_add_up_every_gpu_box_and_apply_sets_both_pools_and_the_run_limit(
    write_config: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    servers = [
        {"url": "http://box1:8188", "slots": 3},
        {"url": "http://box2:8188"},
    ]
    path = write_config(
        {
            "backends": {
                "gpu": {"type": "comfyui", "servers": servers},
                "same_box": {"type": "comfyui", "url": "http://box2:8188", "pool_limit": 1},
                "mock": {"type": "mock", "pool": "gpu"},
                "cloud": {"type": "mock"},
            }
        }
    )
    shown = CliRunner().invoke(cli, ["config", "limits", str(path)])
    assert shown.exit_code == 0, shown.output
    unknown = "in force: unknown (DAGSTER_HOME is not set)"
    assert shown.output.splitlines() == [
        "imagen_gpu op pool: 6 (backend mock 1, http://box1:8188 3, http://box2:8188 2); "
        + unknown,
        f"imagen_cloud op pool: 8 (cloud generations at once, fixed); {unknown}",
        f"GPU runs in the run queue (tag imagen/pool=imagen_gpu): 7; {unknown}",
    ]
    dagster_yaml = limits_only_instance(tmp_path / "dagster_home")
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_yaml.parent))
    before = CliRunner().invoke(cli, ["config", "limits", str(path)])
    assert before.exit_code == 0, before.output
    default = "(not set: dagster.yaml's concurrency.pools.default_limit)"
    assert before.output.splitlines() == [
        "imagen_gpu op pool: 6 (backend mock 1, http://box1:8188 3, http://box2:8188 2); "
        f"in force 2 {default}",
        f"imagen_cloud op pool: 8 (cloud generations at once, fixed); in force 2 {default}",
        "GPU runs in the run queue (tag imagen/pool=imagen_gpu): 7; in force 3 (dagster.yaml): "
        "differs",
        "apply: imagen config limits --apply $DAGSTER_HOME/dagster.yaml (then restart "
        "dagster-daemon); imagen worker sets pools that are not set when it starts",
    ]
    applied = CliRunner().invoke(cli, ["config", "limits", str(path), "--apply", str(dagster_yaml)])
    assert applied.exit_code == 0, applied.output
    assert applied.output.splitlines()[1:] == [
        "imagen_gpu op pool: 6 (backend mock 1, http://box1:8188 3, http://box2:8188 2); "
        "in force 6 (set on the instance)",
        "imagen_cloud op pool: 8 (cloud generations at once, fixed); "
        "in force 8 (set on the instance)",
        "GPU runs in the run queue (tag imagen/pool=imagen_gpu): 7; in force 7 (dagster.yaml)",
    ]
    assert "limit: 7" in dagster_yaml.read_text(encoding="utf-8")
    assert "# Runs whose generate step uses the GPU pool" in dagster_yaml.read_text("utf-8")
    with dg.DagsterInstance.get() as instance:
        infos = instance.event_log_storage.get_concurrency_infos(["imagen_gpu", "imagen_cloud"])
    assert {pool: info.slot_count for pool, info in infos.items()} == {
        "imagen_gpu": 6,
        "imagen_cloud": 8,
    }


def test_limits_of_a_config_without_a_gpu_backend_are_the_shipped_ones(
    write_config: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue: a mock-only config computed imagen_gpu 1 and a run limit 2, while the docs
    said 2 and the shipped dagster.yaml 3."""
    path = write_config({"backends": {"mock": {"type": "mock"}}})
    dagster_yaml = limits_only_instance(tmp_path / "dagster_home")
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_yaml.parent))
    with dg.DagsterInstance.get() as instance:
        instance.event_log_storage.set_concurrency_slots("imagen_gpu", 2)
        instance.event_log_storage.set_concurrency_slots("imagen_cloud", 8)
    result = CliRunner().invoke(cli, ["config", "limits", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "imagen_gpu op pool: 2 (no GPU backend: the shipped limit); "
        "in force 2 (set on the instance)",
        "imagen_cloud op pool: 8 (cloud generations at once, fixed); "
        "in force 8 (set on the instance)",
        "GPU runs in the run queue (tag imagen/pool=imagen_gpu): 3; in force 3 (dagster.yaml)",
    ]


def test_backends_lists_instances_with_credential_status(
    write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(
        {
            "default_backend": "b",
            "backends": {"a": {"type": "mock"}, "b": {"type": "mock", "model": "m2"}},
        }
    )
    result = CliRunner().invoke(cli, ["backends", "--config", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "MODEL", "CREDENTIALS"]
    assert lines[1].split()[:3] == ["a", "mock", "mock-v1"]
    assert lines[2].split()[:3] == ["b*", "mock", "m2"]
    assert "none needed" in lines[1]


def test_backends_check_probes_every_instance_over_http(
    write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    replicate_token = "r8_ImagenCliCheckToken0123456789abcdefgh"
    openai_key = "sk-proj-ImagenCliCheckKey0123456789abcdefghijkl"
    monkeypatch.setenv("IMAGEN_TEST_REPLICATE_TOKEN", replicate_token)
    monkeypatch.setenv("IMAGEN_TEST_OPENAI_KEY", openai_key)
    monkeypatch.delenv("IMAGEN_TEST_UNSET_KEY", raising=False)
    with (
        running_fake_comfyui() as comfyui,
        running_fake_replicate(replicate_token) as replicate,
        running_fake_openai(openai_key) as openai,
    ):
        path = write_config(
            {
                "default_backend": "gpu",
                "backends": {
                    "gpu": {"type": "comfyui", "url": comfyui.url},
                    "gpu-off": {"type": "comfyui", "url": f"http://127.0.0.1:{closed_port()}"},
                    "flux": {
                        "type": "replicate",
                        "model": "black-forest-labs/flux-schnell",
                        "api_token_env": "IMAGEN_TEST_REPLICATE_TOKEN",
                        "base_url": replicate.base_url,
                    },
                    "oai": {
                        "type": "openai",
                        "api_key_env": "IMAGEN_TEST_OPENAI_KEY",
                        "base_url": openai.base_url,
                    },
                    "oai-nokey": {
                        "type": "openai",
                        "api_key_env": "IMAGEN_TEST_UNSET_KEY",
                        "base_url": openai.base_url,
                    },
                },
            }
        )
        result = CliRunner().invoke(cli, ["backends", "--check", "--config", str(path)])
        probes = {
            "comfyui": [r.path for r in comfyui.requests("GET")],
            "replicate": [r.path for r in replicate.requests("GET")],
            "openai": [(r.method, r.path) for r in openai.received],
        }
    assert result.exit_code == 0, result.output
    header, *lines, footer = result.output.splitlines()
    assert re.split(r"\s{2,}", header) == [
        "NAME", "TYPE", "MODEL", "CREDENTIALS", "REACHABLE", "MODEL OK", "DETAIL",
    ]  # fmt: skip
    rows = {cells[0]: cells[3:] for cells in (re.split(r"\s{2,}", line) for line in lines)}
    assert rows["gpu*"][:3] == ["none needed", "yes", "yes"]
    assert rows["gpu*"][3].startswith("ComfyUI 0.3.43")
    assert rows["gpu-off"][:2] == ["none needed", "NO"]
    assert "cannot reach" in rows["gpu-off"][-1]
    assert rows["flux"][:3] == ["set (IMAGEN_TEST_REPLICATE_TOKEN)", "yes", "yes"]
    assert rows["oai"][:3] == ["set (IMAGEN_TEST_OPENAI_KEY)", "yes", "yes"]
    assert rows["oai-nokey"] == ["missing IMAGEN_TEST_UNSET_KEY", "-", "-", "credentials missing"]
    assert footer.startswith("(* default backend; config: ")
    assert "/system_stats" in probes["comfyui"]
    assert probes["replicate"] == ["/v1/models/black-forest-labs/flux-schnell"]
    assert probes["openai"] == [("GET", "/v1/models/gpt-image-2")]
    assert replicate_token not in result.output and openai_key not in result.output
