"""How the CLI reports errors: one line on stderr, a meaningful exit code."""

from __future__ import annotations

import click

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class CliError(click.ClickException):
    """An error shown as ``imagen: error: <message>`` with a chosen exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: object = None) -> None:
        """Print to stderr."""
        click.echo(f"imagen: error: {self.format_message()}", err=True)
