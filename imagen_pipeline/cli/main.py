"""Entry point of the ``imagen`` command.

Subcommands are imported when they run, not when ``imagen`` starts: ``imagen generate`` and
``imagen queue`` need Dagster, the others must not pay for importing it (about 1-2 s), and
``imagen --help`` imports none of them. This is click's documented lazy-loading pattern.
"""

from __future__ import annotations

import importlib

import click

from imagen_pipeline import __version__

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "backends": (
        "imagen_pipeline.cli.backends_cmd:backends",
        "List backend instances with their type and whether their credentials are set.",
    ),
    "config": ("imagen_pipeline.cli.config_cmd:config", "Inspect and check imagen.yaml."),
    "daemon": (
        "imagen_pipeline.cli.daemon_cmd:daemon",
        "Run Dagster's daemons (jobs sensor, run queue, monitoring); runs until stopped.",
    ),
    "db": ("imagen_pipeline.cli.db_cmd:db", "The imagen database (schemas imagen and mai)."),
    "doctor": (
        "imagen_pipeline.cli.doctor_cmd:doctor",
        "Check every part of the stack; exit 1 if one fails.",
    ),
    "generate": (
        "imagen_pipeline.cli.generate:generate",
        "Generate an image for PROMPT (--count: several) and print its absolute path.",
    ),
    "housekeeping": (
        "imagen_pipeline.cli.housekeeping_cmd:housekeeping",
        "Delete finished runs past their age and sweep the staging folder.",
    ),
    "lineage": (
        "imagen_pipeline.cli.lineage_cmd:lineage_command",
        "Print an image's ancestors and descendants (imagen.images ids) as trees.",
    ),
    "queue": ("imagen_pipeline.cli.queue_cmd:queue", "The imagen.jobs queue."),
    "usage": (
        "imagen_pipeline.cli.usage_cmd:usage",
        "Print spend and image counts per backend, model or owner.",
    ),
    "worker": (
        "imagen_pipeline.cli.worker_cmd:worker",
        "Execute runs sent by the Celery run launcher; runs until stopped.",
    ),
}
"""Command name -> (``module:attribute``, its one-line help for ``imagen --help``; a test
keeps it equal to the command's own)."""


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every subcommand name, without importing any."""
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Import and return the subcommand ``cmd_name``."""
        if cmd_name not in SUBCOMMANDS:
            return None
        module_name, attribute = SUBCOMMANDS[cmd_name][0].split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module_name}:{attribute} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands section of ``--help`` from :data:`SUBCOMMANDS` (no imports)."""
        rows = [(name, SUBCOMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="imagen")
def cli() -> None:
    """Model-agnostic image generation through Dagster."""
