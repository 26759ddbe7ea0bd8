"""``imagen backends``: configured instances, their types and credential status."""

from __future__ import annotations

import click

from imagen_pipeline.cli.errors import CliError
from imagen_pipeline.errors import ImagenError
from imagen_pipeline.generate.setup import load_setup


def _mark(value: bool | None) -> str:
    return {True: "yes", False: "NO", None: "-"}[value]


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="imagen.yaml")
@click.option("--check", is_flag=True, help="Probe each instance (reachable, credentials, model).")
def backends(config_path: str | None, check: bool) -> None:
    """List backend instances with their type and whether their credentials are set."""
    try:
        setup = load_setup(config_path)
    except ImagenError as error:
        raise CliError(str(error)) from None
    rows = [
        (
            "NAME",
            "TYPE",
            "MODEL",
            "CREDENTIALS",
            *(("REACHABLE", "MODEL OK", "DETAIL") if check else ()),
        )
    ]
    for name, instance in sorted(setup.backends.items()):
        missing = instance.missing_credentials()
        needed = instance.credential_env_vars()
        if not needed:
            credentials = "none needed"
        elif missing:
            credentials = "missing " + ", ".join(missing)
        else:
            credentials = "set (" + ", ".join(needed.values()) + ")"
        default = "*" if name == setup.config.default_backend else ""
        row: tuple[str, ...] = (
            name + default,
            instance.type_name,
            instance.backend.model_name(),
            credentials,
        )
        if check:
            result = instance.check()
            row = (*row, _mark(result.reachable), _mark(result.model_present), result.detail)
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    click.echo(f"(* default backend; config: {setup.source_label})")
