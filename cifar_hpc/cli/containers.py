"""``cifar-hpc container-prefix`` (hidden): the container command for slurm/train.sbatch.

train.sbatch asks this command what goes between ``srun``'s own options and the program's
arguments, so that the batch script and ``cifar-hpc submit`` get their container command from
one generator (``cifar_hpc.cluster.containers``). It prints one word per line (the script reads them with
``mapfile``); words never contain a newline (the spec refuses one). Imports nothing heavy: it runs
at the start of every train.sbatch job.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from cifar_hpc.cluster.containers import RUNTIMES, ContainerSpec, container_command


def container_prefix(
    runtime: Annotated[str, typer.Option(help=f"Container runtime: {', '.join(RUNTIMES)}.")] = "none",
    image: Annotated[str, typer.Option(help="Image (.sif, docker:// URI, image name, enroot URI).")] = "",
    binds: Annotated[str, typer.Option(help="Comma-separated host folders mounted at the same path.")] = "",
    workdir: Annotated[str, typer.Option(help="The task's working directory (mounted); default: this one.")] = "",
    gpus: Annotated[str, typer.Option(help="GPUs for the container: job, none, or ids like 0,1.")] = "job",
    program: Annotated[str, typer.Option(help="What to start inside the container.")] = "cifar-hpc",
) -> None:
    """Print, one word per line, what goes between srun's options and PROGRAM's arguments."""
    spec = ContainerSpec(
        runtime=runtime,
        image=image or None,
        binds=tuple(b for b in binds.split(",") if b),
        workdir=workdir or os.getcwd(),
        gpus=gpus or "job",
    )  # type: ignore[arg-type]
    typer.echo("\n".join(container_command(spec, program).words))
