"""The ``cifar-hpc`` command: one Typer app per command module, assembled here.

A ``UserError`` anywhere below becomes one line on stderr and exit code 2, with no traceback;
any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from typing import Annotated, Optional

import typer

from cifar_hpc.base import console
from cifar_hpc.base.errors import Interrupted, Terminated, UserError

app = typer.Typer(
    help="Run CIFAR-10 ResNet training studies on Slurm GPU clusters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every command
)


EXAMPLES = {
    "train": "cifar-hpc train --data-dir data --loader device --epochs 30 --batch-size 512 --lr-find --swa",
    "submit": "cifar-hpc submit --grid ablation --profile gpu-example --dry-run",
    "collect": "cifar-hpc collect runs/ablation -o table.md --plot effects.png",
    "report": "cifar-hpc report runs/ablation -o ablation.html",
    "status": "cifar-hpc status runs/ablation --runs",
    "logs": "cifar-hpc logs 3f2a -f",
    "doctor": "cifar-hpc doctor --grid ablation --profile gpu-example",
    "sync": "cifar-hpc sync runs/ablation --dry-run",
    "data download": "cifar-hpc data download --dir data",
    "data synth": "cifar-hpc data synth --dir data/generated --train-per-batch 200 --test 500",
    "data verify": "cifar-hpc data verify --dir data",
    "grid list": "cifar-hpc grid list",
    "grid show": "cifar-hpc grid show ablation --cells +swa,baseline --seeds 0-4",
}
"""One example per command, shown at the end of its --help (tests check that each one parses)."""


@functools.cache  # once per process: `main` is called many times in notebooks and tests
def _register() -> None:
    # imported here so that `cifar-hpc --help` does not pay for torch until a command needs it
    from cifar_hpc.cli import collect, containers, data, doctor, grid, logs, report, status, submit, train

    def example(name: str) -> str:
        return f"Example: {EXAMPLES[name]}"

    app.command("train", help=train.__doc__, epilog=example("train"))(train.train)
    app.command("submit", help=submit.__doc__, epilog=example("submit"))(submit.submit)
    app.command("collect", help=collect.collect.__doc__, epilog=example("collect"))(collect.collect)
    app.command("report", help=report.report.__doc__, epilog=example("report"))(report.report)
    app.command("status", help=status.status.__doc__, epilog=example("status"))(status.status)
    app.command("logs", help=logs.logs.__doc__, epilog=example("logs"))(logs.logs)
    app.command("doctor", help=doctor.__doc__, epilog=example("doctor"))(doctor.doctor)
    app.command("sync", help=status.sync.__doc__, epilog=example("sync"))(status.sync)
    app.command("container-prefix", help=containers.container_prefix.__doc__, hidden=True)(containers.container_prefix)
    for name, group in (("data", data.app), ("grid", grid.app)):
        for info in group.registered_commands:
            info.epilog = example(f"{name} {info.name or info.callback.__name__.rstrip('_')}")
        app.add_typer(group, name=name)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"cifar-hpc {package_version()}")
        raise typer.Exit()


def package_version() -> str:
    """The installed distribution's version (what pip shows); the source's when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cifar-hpc")
    except PackageNotFoundError:
        import cifar_hpc

        return cifar_hpc.__version__


@app.callback()
def _options(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Show everything: every line of Lightning and W&B, and the library warnings hidden as harmless.",
        ),
    ] = False,
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Run CIFAR-10 ResNet training studies on Slurm GPU clusters."""
    console.configure(verbose)


def main(argv: list[str] | None = None) -> None:
    _register()
    try:
        app(args=argv)  # standalone mode: Typer reports its own usage errors (exit 2) and exits
    except UserError as error:
        typer.echo(f"cifar-hpc: error: {error}", err=True)
        sys.exit(2)
    except Interrupted as stop:
        typer.echo(f"cifar-hpc: {stop}", err=True)
        sys.exit(130)  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C
    except Terminated as stop:  # a SIGTERM (or hang-up) stopped it where it can resume
        typer.echo(f"cifar-hpc: {stop}", err=True)
        sys.exit(143)  # 128 + SIGTERM
