"""``imagen daemon``: Dagster's daemon (``dagster-daemon run``) with a quiet idle log."""

from __future__ import annotations

import click


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def daemon(args: tuple[str, ...]) -> None:
    """Run Dagster's daemons (jobs sensor, run queue, monitoring); runs until stopped.

    Takes the options of ``dagster-daemon run`` (e.g. ``-w workspace.yaml``) and runs it
    in this process, with one change to its log: an idle sensor tick writes no line (the
    first idle tick after a change still does; see docs/deployment.md "The daemon's log").
    ``IMAGEN_SENSOR_LOOP_S`` sets how often the sensors are looked at (Dagster's 5 s).
    """
    from imagen_pipeline.instance.daemon import SensorLoopError, run_daemon

    try:
        run_daemon(args)
    except SensorLoopError as error:
        raise click.ClickException(str(error)) from None
