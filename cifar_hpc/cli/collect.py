"""``cifar-hpc collect``: the study's comparison table (terminal, Markdown, CSV, JSON, LaTeX) and plots.

Thin: options in; ``cifar_hpc.study.recorded`` loads, ``aggregate`` builds the table, ``render`` and ``plots``
show it, ``wandb_io`` logs it. Those import pandas, scipy and matplotlib, so they are imported when
the command runs, not when the CLI starts. A ``UserError`` is left to the top-level CLI (one line, exit 2).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cifar_hpc.base.errors import UserError
from cifar_hpc.cli.filters import AllVersions, Where

app = typer.Typer()


class Format(str, Enum):
    rich = "rich"
    md = "md"
    csv = "csv"
    json = "json"
    latex = "latex"


EXTENSIONS = {".md": Format.md, ".csv": Format.csv, ".json": Format.json, ".tex": Format.latex, ".txt": Format.rich}


def format_for(output: Path | None, chosen: Format | None = None) -> Format:
    """The format: ``--format``, else what ``-o FILE``'s extension says, else the terminal table.
    A ``--format`` that contradicts the extension (``-f md -o x.csv``) is refused; ``.txt`` (plain
    text) and an extension of no format take any."""
    implied = EXTENSIONS.get(output.suffix.lower()) if output is not None else None
    if chosen is None:
        if output is not None and implied is None:
            raise UserError(
                f"cannot tell the table format from {output.name!r}: use {' '.join(EXTENSIONS)} or --format"
            )
        return implied or Format.rich
    if implied is not None and implied is not chosen and output.suffix.lower() != ".txt":
        raise UserError(
            f"--format {chosen.value} contradicts {output.name!r}, a {output.suffix} file being {implied.value}: "
            "drop --format, or name the file after the format"
        )
    return chosen


@app.command("collect")
def collect(
    study_dir: Annotated[
        Path, typer.Argument(help="The study folder, runs/<grid>/ (study.json and one folder per run).")
    ],
    format: Annotated[
        Optional[Format],
        typer.Option(
            "--format",
            "-f",
            help="rich (terminal table) | md | csv | json | latex; default: from --output's extension.",
        ),
    ] = None,
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output",
            "-o",
            help="Write the table, every column, to this file (.md .csv .json .tex .txt) instead of stdout.",
        ),
    ] = None,
    plot: Annotated[
        Optional[Path],
        typer.Option(help="PNG: each row's difference from its reference with its CI, one panel per model and axes."),
    ] = None,
    plot_cost: Annotated[
        Optional[Path],
        typer.Option(
            help="PNG: accuracy (mean with its CI) against training and evaluation time per run, one point per row."
        ),
    ] = None,
    target_effect: Annotated[
        Optional[float],
        typer.Option(
            metavar="PP",
            help="Also say how many seeds each comparison needs to detect this difference (percentage points) with 80% power.",
        ),
    ] = None,
    plot_gpu: Annotated[
        Optional[tuple[str, Path]],
        typer.Option(
            metavar="RUN_ID FILE.png",
            help="PNG: GPU utilisation and memory over time of one run (an id prefix is enough).",
        ),
    ] = None,
    baseline: Annotated[
        Optional[str],
        typer.Option(help="Compare every row with this cell (default: each row's own reference from the grid)."),
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 1 when any run is missing, failed, corrupt or not finished.")
    ] = False,
    slurm: Annotated[
        bool, typer.Option("--slurm/--no-slurm", help="Ask Slurm (squeue/sacct) about runs without a result.")
    ] = True,
    against: Annotated[
        Optional[Path],
        typer.Option(
            metavar="STUDY_B",
            help="Put this study beside STUDY_DIR (A): the same rows of both, B − A with Welch's 95% CI, rows in one only.",
        ),
    ] = None,
    runs: Annotated[
        bool,
        typer.Option(
            "--runs",
            help="One row per run instead of per setting, tidy (every setting, state, metrics, cost): -o runs.csv, "
            ".json or .parquet; CSV on stdout without -o.",
        ),
    ] = False,
    where: Where = None,
    all_versions: AllVersions = False,
    wandb: Annotated[
        bool,
        typer.Option(
            "--wandb",
            help="Also log the table as a wandb.Table in a summary run of the study's W&B group (offline without an API key; push it with `cifar-hpc sync`).",
        ),
    ] = False,
) -> None:
    """Aggregate a study's results into its comparison table (and plots).

    One row per setting (everything but the seed), seeds aggregated; paired differences from each
    row's reference with 95% CIs, Holm-adjusted significance and the smallest detectable effect; cost
    per run; lists failed, missing, running and corrupt runs. A cell with runs of other settings shows
    the grid's own version: --where or --all-versions chooses (a warning says what else there is)."""
    from cifar_hpc.report.aggregate import aggregate
    from cifar_hpc.report.display import list_lines
    from cifar_hpc.report.plots import plot_path
    from cifar_hpc.report.render import render, render_rich
    from cifar_hpc.report.versions import parse_where
    from cifar_hpc.study.recorded import load_study
    from cifar_hpc.study.run_lookup import find_run
    from cifar_hpc.study.states import ask_slurm

    chosen = {"baseline": baseline, "where": parse_where(where) if where else None, "all_versions": all_versions}
    if runs:
        if format is not None or plot or plot_cost or plot_gpu or wandb:
            raise UserError(
                "--runs writes one row per run, in the format of -o's extension; it takes no --format, plot or --wandb"
            )
        write_runs(study_dir, output, slurm=slurm, **chosen)
        return
    format = format_for(output, format)
    if against is not None:
        write_against(study_dir, against, output, format, slurm=slurm, **chosen)
        return
    plot, plot_cost = (None if p is None else plot_path(p) for p in (plot, plot_cost))  # the files written
    if plot_gpu is not None:
        plot_gpu = (plot_gpu[0], plot_path(plot_gpu[1]))
    if target_effect is not None and not target_effect > 0:
        raise UserError(f"--target-effect must be a positive number of percentage points, got {target_effect:g}")
    study = load_study(study_dir)
    summary = aggregate(study, ask_slurm(study) if slurm else None, target_effect_pp=target_effect, **chosen)

    if format is Format.rich and output is None:
        from rich.console import Console

        render_rich(summary, console=Console())
    else:
        text = render(summary, format.value)
        if output is None:
            typer.echo(text, nl=False)
        else:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(text)
            typer.echo(f"wrote {output}", err=True)
        if output is not None or format is Format.csv:  # the lists are not in the file / the CSV
            for heading, lines in list_lines(summary):
                typer.echo(f"{heading}:", err=True)
                for line in lines:
                    typer.echo(f"  {line}", err=True)
    if plot is not None or plot_cost is not None or plot_gpu is not None:
        from cifar_hpc.report import plots

        if plot is not None:
            typer.echo(f"wrote {plots.plot_effects(summary, plot)}", err=True)
        if plot_cost is not None:
            typer.echo(f"wrote {plots.plot_cost(summary, plot_cost)}", err=True)
        if plot_gpu is not None:
            run_id, png = plot_gpu
            _, run = find_run(study.root, run_id)
            typer.echo(f"wrote {plots.plot_gpu(study.root / run.run_id, png)}", err=True)
    if wandb:
        from cifar_hpc.report.wandb_io import log_to_wandb

        typer.echo(f"W&B summary run: {log_to_wandb(summary, study)}", err=True)
    if strict and summary.incomplete:
        counts = ", ".join(f"{n} {state}" for state, n in summary.counts.items() if n and state != "completed")
        typer.echo(f"cifar-hpc: --strict: {summary.incomplete} run(s) not completed ({counts})", err=True)
        raise typer.Exit(1)


RUN_EXTENSIONS = (".csv", ".json", ".parquet")


def write_runs(study_dir: Path, output: Path | None, *, slurm: bool, **chosen: Any) -> None:
    """``collect --runs``: ``cifar_hpc.report.run_table``'s records, one per run, as CSV, JSON or Parquet."""
    from cifar_hpc.report.aggregate import aggregate
    from cifar_hpc.report.run_table import RUN_FORMATS, run_records, write_runs_parquet
    from cifar_hpc.study.recorded import load_study
    from cifar_hpc.study.states import ask_slurm, classify_all

    suffix = output.suffix.lower() if output is not None else ".csv"
    if suffix not in RUN_EXTENSIONS:
        raise UserError(f"--runs writes {', '.join(RUN_EXTENSIONS[:-1])} or {RUN_EXTENSIONS[-1]}: not {output.name!r}")
    study = load_study(study_dir)
    jobs = ask_slurm(study) if slurm else None
    records = run_records(study, classify_all(study, jobs), aggregate(study, jobs, **chosen), jobs)
    if output is None:
        typer.echo(RUN_FORMATS[".csv"](records), nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        write_runs_parquet(records, output)
    else:
        output.write_text(RUN_FORMATS[suffix](records))
    typer.echo(f"wrote {output} ({len(records)} runs)", err=True)


def write_against(
    study_a: Path, study_b: Path, output: Path | None, format: Format, *, slurm: bool, **chosen: Any
) -> None:
    """``collect A --against B``: ``cifar_hpc.report.against``'s side-by-side table."""
    from cifar_hpc.report.against import render_against
    from cifar_hpc.report.aggregate import aggregate
    from cifar_hpc.study.recorded import load_study
    from cifar_hpc.study.states import ask_slurm

    if format is Format.latex:
        raise UserError("--against writes text, md, csv or json")
    summaries = []
    for root in (study_a, study_b):
        study = load_study(root)
        summaries.append(aggregate(study, ask_slurm(study) if slurm else None, **chosen))
    text = render_against(*summaries, (str(study_a), str(study_b)), format.value)
    if output is None:
        typer.echo(text, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    typer.echo(f"wrote {output}", err=True)
