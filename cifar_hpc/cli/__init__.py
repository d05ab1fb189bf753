"""The ``cifar-hpc`` command: one Typer app per command module, assembled here.

A ``UserError`` anywhere below becomes one line on stderr and exit code 2, with no traceback;
any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import sys

import typer

from cifar_hpc.errors import UserError

app = typer.Typer(
    help="Run CIFAR-10 ResNet training studies on Slurm GPU clusters.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
)


def _register() -> None:
    # imported here so that `cifar-hpc --help` does not pay for torch until a command needs it
    from cifar_hpc.cli import data, train

    app.command("train", help=train.__doc__)(train.train)
    app.add_typer(data.app, name="data")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    _register()
    try:
        app(args=argv, standalone_mode=False)
    except UserError as error:
        typer.echo(f"cifar-hpc: error: {error}", err=True)
        sys.exit(2)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        sys.exit(130)
    except Exception as error:  # click's own usage errors (bad option, missing argument)
        import click

        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(error.exit_code)
        raise
