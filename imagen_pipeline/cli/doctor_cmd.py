"""``imagen doctor``: is the whole stack healthy? One line per part (docs/operations.md)."""

from __future__ import annotations

import click

DEFAULT_TIMEOUT_S = 10.0


def listener_webserver_url() -> str:
    """The webserver URL ``imagen queue listen`` uses without ``--webserver-url``, from its
    own option (``$IMAGEN_WEBSERVER_URL`` or its default)."""
    from imagen_pipeline.cli.queue_cmd import listen_command

    [option] = [param for param in listen_command.params if param.name == "webserver_url"]
    with click.Context(listen_command) as ctx:
        return str(option.get_default(ctx, call=True))


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="imagen.yaml")
@click.option(
    "--webserver-url",
    help="dagster-webserver to check; default: the one imagen queue listen uses "
    "($IMAGEN_WEBSERVER_URL or http://127.0.0.1:3000).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of the checks.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=1, max=120),
    default=DEFAULT_TIMEOUT_S,
    show_default=True,
    help="Seconds to wait for every check; a part that has not answered by then fails.",
)
def doctor(
    config_path: str | None, webserver_url: str | None, as_json: bool, timeout_s: float
) -> None:
    """Check every part of the stack; exit 1 if one fails."""
    from imagen_pipeline.doctor.checks import diagnose
    from imagen_pipeline.doctor.report import exit_status, render_json, render_lines

    checks = diagnose(config_path, webserver_url or listener_webserver_url(), timeout_s)
    if as_json:
        click.echo(render_json(checks))
    else:
        for line in render_lines(checks):
            click.echo(line)
    raise SystemExit(exit_status(checks))
