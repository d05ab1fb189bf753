"""The ``cifar-hpc`` command: one Typer app per command module, assembled here.

A ``UserError`` anywhere below becomes one line on stderr and exit code 2, with no traceback;
any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import logging
import sys

import typer

from cifar_hpc.errors import Interrupted, UserError

app = typer.Typer(
    help="Run CIFAR-10 ResNet training studies on Slurm GPU clusters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@functools.cache  # once per process: `main` is called many times in notebooks and tests
def _register() -> None:
    # imported here so that `cifar-hpc --help` does not pay for torch until a command needs it
    from cifar_hpc.cli import collect, containers, data, doctor, grid, status, submit, train

    app.command("train", help=train.__doc__)(train.train)
    app.command("submit", help=submit.__doc__)(submit.submit)
    app.command("collect", help=collect.collect.__doc__)(collect.collect)
    app.command("status", help=status.status.__doc__)(status.status)
    app.command("doctor", help=doctor.__doc__)(doctor.doctor)
    app.command("sync", help=status.sync.__doc__)(status.sync)
    app.command("container-prefix", help=containers.container_prefix.__doc__, hidden=True)(containers.container_prefix)
    app.add_typer(data.app, name="data")
    app.add_typer(grid.app, name="grid")
    app.command("logs")(__import__("cifar_hpc.cli.logs", fromlist=["logs"]).logs)  # help: its docstring


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (test runners and tools swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _hide_litlogger_advert(record: logging.LogRecord) -> bool:
    # Lightning advertises a hosted service at every start; it is not ours to print
    return "litlogger" not in record.getMessage()


def _configure_logging() -> None:
    root = logging.getLogger()
    if not any(isinstance(h, _CurrentStderr) for h in root.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_hide_litlogger_advert)  # a set: once


def main(argv: list[str] | None = None) -> None:
    _configure_logging()
    _register()
    try:
        app(args=argv)  # standalone mode: Typer reports its own usage errors (exit 2) and exits
    except UserError as error:
        typer.echo(f"cifar-hpc: error: {error}", err=True)
        sys.exit(2)
    except Interrupted as stop:
        typer.echo(f"cifar-hpc: {stop}", err=True)
        sys.exit(130)  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C
