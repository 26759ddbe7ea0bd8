"""``imagen generate``: run the ``generate_image`` job through Dagster and print the path.

Prints exactly one line on stdout per image (its absolute path; one image unless
``--count`` asks for more), which is the contract the ``/imagine`` chat skill relies on.
Everything else goes to stderr.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import dagster as dg

from imagen_pipeline import generate as generate_path
from imagen_pipeline.backends.sources import SOURCE_MODES
from imagen_pipeline.cli.errors import EXIT_FAILED, CliError
from imagen_pipeline.cli.instance import cli_instance
from imagen_pipeline.defs.jobs import build_generate_image_job
from imagen_pipeline.defs.resources import resources_run_config
from imagen_pipeline.defs.run_config import GenerateImageConfig
from imagen_pipeline.defs.run_errors import step_failure_text
from imagen_pipeline.defs.run_identity import run_tags
from imagen_pipeline.errors import ImagenError
from imagen_pipeline.generate.planning import MAX_COUNT, ImageSpec, parse_size
from imagen_pipeline.generate.setup import Setup, load_setup
from imagen_pipeline.output.store import StoredImage
from imagen_pipeline.prompts.styles import load_styles
from imagen_pipeline.run_tags import TAG_SOURCE


def _parse_opts(pairs: tuple[str, ...]) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--opt: expected KEY=VALUE (got {pair!r})")
        try:
            opts[key] = json.loads(value)
        except ValueError:
            opts[key] = value
    return opts


def source_reference(option: str, value: str) -> str:
    """``--image``/``--mask`` as the request names it: an existing file as its absolute
    path, else digits as an ``imagen.images`` id."""
    path = Path(value).expanduser()
    if path.is_file():
        return str(path.resolve())
    if value.isdigit():
        return value
    raise CliError(f"{option}: {value!r} is neither a file nor an imagen.images id")


def run_generate_job(
    spec: ImageSpec, setup: Setup, verbose: bool, tags: Mapping[str, str]
) -> list[StoredImage]:
    """Execute ``generate_image`` in this process, recorded in the CLI's Dagster instance,
    with the resources of ``setup`` (the one read of imagen.yaml) and the plan's ``tags``
    from the start (so the run writes none later)."""
    run_config: dict[str, Any] = {
        "ops": {
            "enrich_prompt": {
                "config": GenerateImageConfig.from_spec(spec).model_dump(
                    mode="json", exclude_none=True
                )
            }
        },
        "loggers": {"console": {"config": {"log_level": "DEBUG" if verbose else "WARNING"}}},
        "resources": resources_run_config(setup),
    }
    with (
        cli_instance() as instance,
        dg.execute_job(
            dg.build_reconstructable_job(
                build_generate_image_job.__module__, build_generate_image_job.__name__
            ),
            instance=instance,
            run_config=run_config,
            tags={**tags, TAG_SOURCE: "cli"},
            raise_on_error=False,
        ) as result,
    ):
        if not result.success:
            message = step_failure_text(result.all_events) or "run failed"
            raise CliError(f"{message} (run {result.run_id})", EXIT_FAILED)
        return result.output_for_node("write_files")


@click.command()
@click.argument("prompt")
@click.option(
    "--style",
    default="none",
    show_default=True,
    help="Style preset.",
    type=click.Choice(sorted(load_styles())),
)
@click.option("--size", help="WIDTHxHEIGHT, e.g. 1024x1024 (default: style, then 1024x1024).")
@click.option("--backend", default="", help="Backend instance (default: default_backend).")
@click.option("--seed", type=int, help="Seed (default: the backend picks and records one).")
@click.option("--steps", type=int, help="Sampling steps (default: style, then backend).")
@click.option("--negative", default="", help="Negative prompt.")
@click.option(
    "--count",
    type=click.IntRange(1, MAX_COUNT),
    default=1,
    show_default=True,
    help="Images (variations) of the prompt, each with its own seed.",
)
@click.option(
    "--opt",
    "opts",
    multiple=True,
    metavar="KEY=VALUE",
    help="Backend option (repeatable); VALUE is parsed as JSON when it can be.",
)
@click.option(
    "--image",
    "images",
    multiple=True,
    metavar="PATH|ID",
    help="Source image to start from (repeatable): a file, or an imagen.images id.",
)
@click.option("--mask", metavar="PATH|ID", help="Mask of the edit (white: change).")
@click.option(
    "--mode",
    type=click.Choice(SOURCE_MODES),
    help="What to do with the source images (default: the backend's).",
)
@click.option(
    "--strength",
    type=click.FloatRange(0, 1),
    help="For --mode img2img: 0 keeps the source, 1 ignores it.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="imagen.yaml to use (default: $IMAGEN_CONFIG, then ~/.config/imagen.yaml).",
)
@click.option("-v", "--verbose", is_flag=True, help="Show Dagster's event log on stderr.")
def generate(
    prompt: str,
    style: str,
    size: str | None,
    backend: str,
    seed: int | None,
    steps: int | None,
    negative: str,
    count: int,
    opts: tuple[str, ...],
    images: tuple[str, ...],
    mask: str | None,
    mode: str | None,
    strength: float | None,
    config_path: str | None,
    verbose: bool,
) -> None:
    """Generate an image for PROMPT (--count: several) and print its absolute path."""
    try:
        width, height = parse_size(size) if size else (None, None)
        spec = ImageSpec(
            prompt=prompt,
            negative=negative,
            style=style,
            backend=backend,
            width=width,
            height=height,
            steps=steps,
            seed=seed,
            count=count,
            backend_opts=_parse_opts(opts),
            source_images=[source_reference("--image", image) for image in images],
            mask=source_reference("--mask", mask) if mask else None,
            mode=mode,
            strength=strength,
        )
        setup = load_setup(config_path)
        plan = generate_path.plan(spec, setup)
    except ImagenError as error:
        raise CliError(str(error)) from None
    for stored in run_generate_job(spec, setup, verbose, run_tags(plan)):
        meta = stored.generated.metadata
        click.echo(
            f"imagen: {stored.generated.plan.backend} ({meta.model}) seed {meta.seed}, "
            f"{stored.generated.width}x{stored.generated.height}, {meta.latency_s:.2f}s, "
            f"run {stored.generated.run_id[:8]}",
            err=True,
        )
        click.echo(stored.image_path)
