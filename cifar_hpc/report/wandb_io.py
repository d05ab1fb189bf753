"""W&B I/O of a study: the final table as a ``wandb.Table``, and pushing offline runs with ``wandb sync``.

Training runs log themselves (``cifar_hpc.training.train``); this module only touches W&B after the fact.
Whether W&B is online is ``cifar_hpc.training.wandb_mode``'s one rule.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cifar_hpc.base.errors import UserError
from cifar_hpc.report.raw_formats import CSV_COLUMNS, csv_records
from cifar_hpc.report.table import GENERATED, Summary
from cifar_hpc.study.recorded import Study
from cifar_hpc.training.wandb_mode import find_key, no_key_reason, wandb_offline

SUMMARY_JOB_TYPE = "summary"


def _wandb_project(study: Study) -> str:
    for run in study.runs.values():
        section = (run.result or {}).get("config", {}).get("wandb")
        if isinstance(section, dict) and section.get("project"):
            return str(section["project"])
    return "cifar-hpc"


def log_to_wandb(s: Summary, study: Study, *, mode: str = "auto", project: str | None = None) -> Path | None:
    """Log the table as a ``wandb.Table`` (the CSV columns) in a summary run of the study's W&B group
    (the grid), with the counts in the run's summary. Offline unless an API key is at hand (then
    ``cifar-hpc sync`` pushes it later). The run id is stable per grid, so a re-collect updates the
    same run. Returns the run's local folder."""
    import wandb

    grid = s.grid or study.root.name
    run_id = re.sub(r"[^A-Za-z0-9_-]", "-", f"{grid}-summary")
    run = wandb.init(
        project=project or _wandb_project(study),
        group=grid,
        job_type=SUMMARY_JOB_TYPE,
        id=run_id,
        name=f"{grid} summary",
        dir=str(study.root),
        resume="allow",
        mode="offline" if wandb_offline(mode) else "online",
        tags=[GENERATED] if s.generated else [],
        config={"grid": grid, "baseline_cell": s.baseline_cell, "data": s.data},
    )
    try:
        rows = csv_records(s)
        run.log({"results": wandb.Table(columns=list(CSV_COLUMNS), data=rows, allow_mixed_types=True)})
        run.summary.update(
            {"generated_data": s.generated, "title": s.title, **{f"runs/{state}": n for state, n in s.counts.items()}}
        )
        folder = Path(run.dir).parent  # .../wandb/offline-run-<time>-<id>/files -> the run folder
    finally:
        run.finish()
    return folder


@dataclass(frozen=True)
class OfflineRun:
    path: Path
    """The ``offline-run-<time>-<id>`` folder."""
    synced: bool
    """``wandb sync`` already pushed it: it leaves ``run-<id>.wandb.synced`` next to the file."""


def offline_runs(root: str | Path) -> list[OfflineRun]:
    """Every offline W&B run of a study: each run's ``<run_id>/wandb/offline-run-*`` (training) and
    the study's own ``wandb/offline-run-*`` (``collect --wandb``'s summary run)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} does not exist" if not root.exists() else f"{root} is not a folder")
    folders = {
        p.parent
        for pattern in ("wandb/offline-run-*/*.wandb", "*/wandb/offline-run-*/*.wandb")
        for p in root.glob(pattern)
    }
    return [
        OfflineRun(f, all(w.with_suffix(".wandb.synced").exists() for w in f.glob("*.wandb"))) for f in sorted(folders)
    ]


def _wandb_sync(paths: Sequence[Path]) -> subprocess.CompletedProcess[str]:
    """``wandb sync <paths>``: the one place that uploads (it needs a network and a W&B login)."""
    exe = shutil.which("wandb")
    command = [exe] if exe else [sys.executable, "-m", "wandb"]
    return subprocess.run([*command, "sync", *map(str, paths)], capture_output=True, text=True, check=False)


def sync_study(
    root: str | Path,
    *,
    dry_run: bool = False,
    include_synced: bool = False,
    push: Callable[[Sequence[Path]], subprocess.CompletedProcess[str]] = _wandb_sync,
    key: Callable[[], str | None] = find_key,
) -> tuple[list[OfflineRun], list[OfflineRun], subprocess.CompletedProcess[str] | None]:
    """Push the study's offline runs that are not synced yet: ``(to_push, skipped, wandb's answer)``.
    ``UserError`` before anything is pushed when there is something to push and no W&B key here
    (``key``: where one was found): ``wandb sync`` would fail on every run, in its own words."""
    runs = offline_runs(root)
    todo = [r for r in runs if include_synced or not r.synced]
    skipped = [r for r in runs if r not in todo]
    if dry_run or not todo:
        return todo, skipped, None
    if key() is None:
        raise UserError(f"{no_key_reason()}: log in with `wandb login` where W&B is reachable; nothing was pushed")
    return todo, skipped, push([r.path for r in todo])
