"""``cifar-hpc report``: a study as one self-contained HTML file (``cifar_hpc.report.html``).

Thin: options in; the study is loaded and aggregated as ``collect`` does (the same rows and numbers,
the same ``--baseline``, ``--target-effect``, ``--where`` and ``--all-versions``), then written as one file. pandas, scipy and
matplotlib are imported when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cifar_hpc.base.errors import UserError
from cifar_hpc.cli.filters import AllVersions, Where


def report(
    study_dir: Annotated[
        Path, typer.Argument(help="The study folder, runs/<grid>/ (study.json and one folder per run).")
    ],
    output: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", help="The HTML file to write (default: STUDY_DIR/report.html)."),
    ] = None,
    baseline: Annotated[
        Optional[str],
        typer.Option(help="Compare every row with this cell (default: each row's own reference from the grid)."),
    ] = None,
    target_effect: Annotated[
        Optional[float],
        typer.Option(metavar="PP", help="Also say how many seeds each comparison needs to detect this difference."),
    ] = None,
    against: Annotated[
        Optional[Path],
        typer.Option(metavar="STUDY_B", help="Add a section with this study beside it (as collect --against)."),
    ] = None,
    slurm: Annotated[
        bool, typer.Option("--slurm/--no-slurm", help="Ask Slurm (squeue/sacct) about runs without a result.")
    ] = True,
    where: Where = None,
    all_versions: AllVersions = False,
) -> None:
    """Write a study's report: one HTML file that opens offline and prints to PDF.

    The question and design, collect's comparison table and figures, learning curves averaged over
    seeds, every run (failures with the tail of their log), efficiency and queue wait, provenance
    (data, code, libraries) and the study's data as JSON, all inside the one file."""
    import time

    from cifar_hpc.report.aggregate import aggregate
    from cifar_hpc.report.html import build_report
    from cifar_hpc.report.versions import parse_where
    from cifar_hpc.study.recorded import load_study
    from cifar_hpc.study.states import ask_slurm

    chosen = {"baseline": baseline, "where": parse_where(where) if where else None, "all_versions": all_versions}
    if target_effect is not None and not target_effect > 0:
        raise UserError(f"--target-effect must be a positive number of percentage points, got {target_effect:g}")
    output = output if output is not None else study_dir / "report.html"
    if output.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"the report is an HTML file: name it .html, not {output.name!r}")
    start = time.perf_counter()
    study = load_study(study_dir)
    jobs = ask_slurm(study) if slurm else None
    summary = aggregate(study, jobs, target_effect_pp=target_effect, **chosen)
    other = None
    if against is not None:
        theirs = load_study(against)
        other = (str(against), aggregate(theirs, ask_slurm(theirs) if slurm else None, **chosen))
    text = build_report(study, jobs, summary, other)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    size = len(text.encode())
    typer.echo(
        f"wrote {output} ({size / 1e6:.2f} MB, {len(study.runs)} runs, {time.perf_counter() - start:.1f} s)", err=True
    )
