"""Check what can be checked before spending GPU-hours."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def doctor(
    grid: Annotated[Optional[str], typer.Option(help="Grid to check (data, trick combinations).")] = None,
    profile: Annotated[
        str, typer.Option(help="Cluster profile to check; test-cluster: the local Slurm test cluster.")
    ] = "test-cluster",
    executor: Annotated[
        str, typer.Option(help="slurm | local (skips the Slurm checks); default: the one submit would use here.")
    ] = "auto",
    results_dir: Annotated[Path, typer.Option(help="Where the study's results go.")] = Path("runs"),
) -> None:
    """Check what can be checked before spending GPU-hours: one line per check; exit 1 on any FAIL."""
    from cifar_hpc.cluster.profiles import load_profile
    from cifar_hpc.submit.doctor import run_checks

    prof = load_profile(profile, note=lambda line: typer.echo(line, err=True))
    checks = run_checks(grid, prof, results_dir, executor=executor)
    for check in checks:
        typer.echo(check.line())
    raise typer.Exit(1 if any(check.status == "fail" for check in checks) else 0)
