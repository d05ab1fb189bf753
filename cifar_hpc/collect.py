"""Aggregate a study's results into the comparison table: load, classify, aggregate, render, plot.

Pure functions over the files a study leaves behind (no W&B API, no network); the only outside
knowledge is what Slurm says about jobs, passed in as a ``SlurmView`` that ``cifar_hpc.status``
builds. The pipeline::

    load_study(dir) ─► classify_all(study, slurm) ─► aggregate(study, slurm) ─► render(summary, fmt)
                                                            │                 └► plot_effects(summary, png)
                                                            └ Summary: rows + failed/missing/running/corrupt

**The study folder** ``runs/<grid>/``: ``study.json`` (written by ``cifar-hpc submit``: the grid,
``baseline_cell``, every expected run with its cell/model/seed, and the Slurm arrays that run them)
and one folder per run, ``<run_id>/`` with ``config.json`` and, once finished, ``result.json``
(``cifar_hpc.results``). A folder of plain ``cifar-hpc train`` runs, without ``study.json``, is read
too: the cell of a run without a ``cell`` label is the ``+``-joined names of its tricks
(``crop+flip``), and missing runs cannot be listed.

**A row** is one (model, cell) of the grid, seeds aggregated. The **baseline** of a model is the
row whose cell is ``baseline_cell`` (``study.json``, else ``baseline``; ``--baseline`` overrides).
The difference from the baseline is **paired by seed**: for each seed run in both the cell and the
model's baseline, ``d = test_acc(cell) - test_acc(baseline)``; the interval is the 95% confidence
interval of the mean of ``d`` from Student's t with ``n_pairs - 1`` degrees of freedom (exactly
``scipy.stats.ttest_rel(cell, baseline).confidence_interval()``). ``significant`` means the
interval excludes 0. Fewer than two pairs: no interval, note ``n too small``. Several completed runs
of one (model, cell, seed) (a re-submitted grid with a changed config): the last finished is used,
with a warning.

**Run states** (``classify``), each run counted once:
``completed``/``failed`` (its ``result.json`` says so), ``corrupt`` (``result.json`` unreadable or
half-written: reported, never counted), then, for a run without a result, from Slurm: ``pending``,
``running``, ``requeued`` (preempted or requeued, waiting to restart), ``failed`` (the job ended
FAILED/TIMEOUT/OUT_OF_MEMORY/CANCELLED/... without writing a result), ``missing`` (no result and
nothing will come: not submitted, or gone from the queue), ``unknown`` (no result and Slurm could not
be asked, so it may still be queued or running).

**JSON output** (``render_json``; ``"schema": 1``; other tools read it, so fields are only ever
added). Accuracies are fractions in [0, 1] (the differences too), times in seconds, memory in MiB;
unknown values are ``null``; floats carry 6 significant digits::

    {"schema": 1,
     "title": str,                          # e.g. "Study ablation: test accuracy (CIFAR-10)"
     "grid": "ablation" | null,            # config.grid of the results (study.json's grid)
     "data": "cifar10" | "generated" | null,
     "generated_data": bool,                # true: trained on GENERATED data, not CIFAR-10
     "baseline_cell": "baseline",
     "confidence": 0.95,
     "counts": {"completed": int, "failed": int, "corrupt": int, "running": int, "pending": int,
                "requeued": int, "missing": int, "unknown": int},
     "rows": [{                             # sorted: per model, baseline first, then by delta_mean
        "model": str, "cell": str, "is_baseline": bool,
        "n": int,                           # completed runs (seeds) aggregated in this row
        "expected": int,                    # runs of this row in study.json or on disk, any state
        "seeds": [int, ...], "run_ids": [str, ...],      # of the n completed runs
        "test_acc_mean": float|null, "test_acc_std": float|null,   # std: ddof=1, null when n < 2
        "delta_mean": float|null,           # paired difference from the baseline; null on the baseline row
        "delta_ci_low": float|null, "delta_ci_high": float|null,
        "delta_n_pairs": int,               # seeds in both this row and the baseline
        "p_value": float|null,              # two-sided paired t-test
        "significant": bool|null,           # the interval excludes 0; null without an interval
        "note": str|null,                   # "baseline", "n too small", "no baseline", ...
        "best_val_acc_mean": float|null, "epochs_run_mean": float|null, "wall_s_mean": float|null,
        "train_images_per_s_mean": float|null,
        "gpu_hours_sum": float|null,        # summed over the row's runs
        "gpu_util_mean": float|null,        # mean over runs of each run's mean utilisation, percent
        "gpu_util_p95": float|null,         # mean over runs of each run's 95th percentile, percent
        "gpu_mem_peak_mib": float|null,     # max over runs
        "lr_found_mean": float|null,        # LR finder's pick, null when the finder was off
        "n_failed": int, "n_running": int,  # running: pending + running + requeued
        "n_missing": int, "n_corrupt": int}],   # missing: missing + unknown
     "failed":  [{"run_id", "model", "cell", "seed", "error", "slurm_job", "log"}],
     "missing": [{"run_id", "model", "cell", "seed", "state", "note"}],     # state: missing|unknown
     "running": [{"run_id", "model", "cell", "seed", "state", "slurm_job"}],  # pending|running|requeued
     "corrupt": [{"run_id", "path", "reason"}],      # path relative to the study folder
     "warnings": [str, ...],
     "slurm_notes": [str, ...]}             # what Slurm could not tell

Generated-data results are labelled in every format (title, caption, a ``data`` column in CSV,
``generated_data`` in JSON); generated and real results in one table are refused, and so are runs
of two grids in one folder.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from cifar_hpc.config import MODELS
from cifar_hpc.errors import UserError
from cifar_hpc.results import RESULT_FILE, SCHEMA_VERSION
from cifar_hpc.wandb_mode import wandb_offline

STUDY_FILE = "study.json"
CONFIG_FILE = "config.json"
DEFAULT_BASELINE = "baseline"
CONFIDENCE = 0.95
FORMATS = ("rich", "md", "csv", "json", "latex")
JSON_SCHEMA = 1
GENERATED = "generated"

STATES = ("completed", "failed", "corrupt", "running", "pending", "requeued", "missing", "unknown")
IN_PROGRESS = ("pending", "running", "requeued")
NOT_DONE = ("failed", "corrupt", "running", "pending", "requeued", "missing", "unknown")
"""States that make ``--strict`` fail: anything but completed."""

# Slurm job states (squeue %T / sacct State), grouped by what they mean for a run without a result.
SLURM_PENDING = frozenset({"PENDING", "CONFIGURING"})
SLURM_RUNNING = frozenset({"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING", "STOPPED"})
SLURM_REQUEUED = frozenset({"REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "PREEMPTED", "SUSPENDED", "SPECIAL_EXIT"})
SLURM_FAILED = frozenset({"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "CANCELLED", "NODE_FAIL", "BOOT_FAIL",
                          "DEADLINE", "PREEMPTED", "REVOKED"})


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass(frozen=True)
class SlurmTask:
    """The Slurm job that runs one run: ``1234_5`` for task 5 of array 1234, or ``1234``."""

    job: str
    log: str | None
    """Its log file, from the job's ``log_pattern`` (``%A``, ``%a``, ``%j`` filled in)."""


@dataclass
class Run:
    """One run of the study as found on disk (and in ``study.json``)."""

    run_id: str
    model: str | None
    cell: str | None
    seed: int | None
    local: str
    """``completed``/``failed``/``corrupt`` from ``result.json``; ``started`` (``config.json``
    only); ``absent`` (no folder yet)."""
    result: dict[str, Any] | None = None
    reason: str | None = None
    """Why ``result.json`` is corrupt."""
    slurm: SlurmTask | None = None
    expected: bool = False
    """Listed in ``study.json``."""


@dataclass
class Study:
    root: Path
    grid: str | None
    baseline_cell: str
    runs: dict[str, Run]
    has_manifest: bool
    """``study.json`` was found: missing runs can be listed."""
    warnings: list[str] = field(default_factory=list)

    @property
    def data(self) -> str | None:
        kinds = {r.result.get("data") for r in self.runs.values() if r.result is not None} - {None}
        return kinds.pop() if len(kinds) == 1 else None


def cell_of(result_or_config: Mapping[str, Any], tricks: Sequence[str] | None = None) -> str:
    """The row label: ``config.cell``, else the ``+``-joined tricks (``crop+flip``), else ``none``."""
    config = result_or_config.get("config", result_or_config)
    cell = config.get("cell") if isinstance(config, Mapping) else None
    if cell:
        return str(cell)
    tricks = tricks if tricks is not None else result_or_config.get("tricks")
    if isinstance(tricks, list) and tricks:
        return "+".join(str(t) for t in tricks)
    return "none"


def _check_result(result: Any) -> str | None:
    """Why this parsed ``result.json`` cannot be used, or None when it can."""
    if not isinstance(result, dict):
        return "not a JSON object"
    if result.get("status") not in ("completed", "failed"):
        return f"unknown status {result.get('status')!r}"
    config = result.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("model"), str) or not _is_int(config.get("seed")):
        return "no config.model / config.seed"
    if result["status"] == "completed" and not _is_number(result.get("test_acc")):
        return "completed without a numeric test_acc"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_run(folder: Path) -> tuple[str, dict[str, Any] | None, str | None]:
    """``(local_state, result, reason)`` of one run folder; never raises on a bad file."""
    path = folder / RESULT_FILE
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return ("started" if (folder / CONFIG_FILE).exists() else "absent"), None, None
    except OSError as e:
        return "corrupt", None, f"cannot read: {e.strerror or e}"
    if not text.strip():
        return "corrupt", None, "empty file (half-written?)"
    try:
        result = json.loads(text)  # bytes: UTF-8/16/32 detected; undecodable bytes are a ValueError too
    except ValueError as e:
        return "corrupt", None, f"not valid JSON (half-written?): {e}"
    problem = _check_result(result)
    if problem:
        return "corrupt", None, problem
    return result["status"], result, None


def _read_config(folder: Path) -> dict[str, Any] | None:
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def log_path(pattern: str | None, job_id: str, task_id: int | None) -> str | None:
    """Fill in Slurm's ``%A`` (array id), ``%a`` (task), ``%j`` (job id), ``%%`` of a log pattern."""
    if not pattern:
        return None
    task = str(task_id) if task_id is not None else ""
    replacements = {"%%": "%", "%A": job_id, "%a": task, "%j": f"{job_id}_{task}" if task else job_id, "%J": job_id}
    return re.sub(r"%%|%A|%a|%j|%J", lambda m: replacements[m.group(0)], pattern)


def _read_manifest(root: Path) -> dict[str, Any] | None:
    path = root / STUDY_FILE
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not valid JSON ({e}); was it written by cifar-hpc submit?") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("runs"), list):
        raise UserError(f"{path} has no 'runs' list; was it written by cifar-hpc submit?")
    if manifest.get("schema", 1) != 1:
        raise UserError(f"{path} has schema {manifest.get('schema')!r}; this cifar-hpc reads schema 1")
    return manifest


def load_study(root: str | Path, *, baseline: str | None = None, check_mixing: bool = True) -> Study:
    """Read ``study.json`` (if any) and every run folder of a study. Refuses (``UserError``) a folder
    that is not a study and, unless ``check_mixing`` is off (``status`` only counts), runs of two
    grids or generated mixed with real data."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder" if root.exists() else f"{root} does not exist")
    if (root / RESULT_FILE).exists():
        raise UserError(f"{root} is a single run's folder; point collect at the study folder that holds it ({root.parent})")
    manifest = _read_manifest(root)
    warnings: list[str] = []
    runs: dict[str, Run] = {}
    for entry in (manifest or {}).get("runs", []):
        if not isinstance(entry, dict) or not isinstance(entry.get("run_id"), str):
            raise UserError(f"{root / STUDY_FILE}: a run entry has no run_id: {entry!r}")
        runs[entry["run_id"]] = Run(
            run_id=entry["run_id"], model=entry.get("model"), cell=entry.get("cell"),
            seed=entry.get("seed"), local="absent", expected=True,
        )
    for job in (manifest or {}).get("jobs", []):
        if job.get("job_id") is None:  # the local executor: no Slurm
            continue
        job_id, task_ids = str(job["job_id"]), job.get("task_ids") or []
        for i, run_id in enumerate(job.get("run_ids", [])):
            task = task_ids[i] if job.get("array") and i < len(task_ids) else None
            slurm_id = f"{job_id}_{task}" if task is not None else job_id
            if run_id in runs:  # a later submission of the same run replaces the earlier one
                runs[run_id].slurm = SlurmTask(slurm_id, log_path(job.get("log_pattern"), job_id, task))

    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "logs")))
    for folder in folders:
        if folder.name not in runs and not ((folder / RESULT_FILE).exists() or (folder / CONFIG_FILE).exists()):
            continue
        run = runs.setdefault(folder.name, Run(run_id=folder.name, model=None, cell=None, seed=None, local="absent"))
        run.local, run.result, run.reason = read_run(folder)
        source = run.result.get("config") if run.result else (_read_config(folder) if run.model is None else None)
        if source:
            run.model = source.get("model", run.model)
            run.cell = cell_of(run.result) if run.result else (source.get("cell") or run.cell)
            run.seed = source.get("seed", run.seed)
        if run.result and run.result.get("run_id") not in (None, run.run_id):
            warnings.append(f"{folder.name}/{RESULT_FILE} names run {run.result['run_id']}: taken as {folder.name}")
        if run.result and run.result.get("schema", SCHEMA_VERSION) > SCHEMA_VERSION:
            warnings.append(f"{folder.name}/{RESULT_FILE} has schema {run.result['schema']} (newer than this cifar-hpc)")

    if manifest is None and not runs:
        raise UserError(
            f"{root} is not a study folder: no {STUDY_FILE} and no run folders with {RESULT_FILE} or {CONFIG_FILE}"
        )
    grid = _one_grid(root, manifest, runs, check_mixing)
    if check_mixing:
        _refuse_mixed_data(runs)
    baseline_cell = baseline or (manifest or {}).get("baseline_cell") or DEFAULT_BASELINE
    if manifest is None:
        warnings.append(f"no {STUDY_FILE} in {root}: runs that never started cannot be listed as missing")
    return Study(root=root, grid=grid, baseline_cell=baseline_cell, runs=runs, has_manifest=manifest is not None,
                 warnings=warnings)


def _one_grid(root: Path, manifest: dict[str, Any] | None, runs: Mapping[str, Run], check: bool) -> str | None:
    grids = Counter(r.result["config"].get("grid") for r in runs.values() if r.result is not None)
    if manifest is not None and manifest.get("grid") is not None:
        grids.setdefault(manifest["grid"], 0)
        if not check:
            return manifest["grid"]
    if len(grids) > 1 and check:
        listed = ", ".join(f"{g if g is not None else '(no grid label)'}: {n} runs" for g, n in sorted(grids.items(), key=str))
        raise UserError(f"{root} mixes runs of {len(grids)} different grids ({listed}); collect one grid at a time")
    return next(iter(grids)) if len(grids) == 1 else None


def _refuse_mixed_data(runs: Mapping[str, Run]) -> None:
    kinds = Counter(r.result.get("data") for r in runs.values() if r.result is not None)
    kinds.pop(None, None)
    if len(kinds) > 1:
        listed = ", ".join(f"{n} on {kind}" for kind, n in sorted(kinds.items()))
        raise UserError(
            f"refusing to put results on generated data and on real CIFAR-10 in one table ({listed}); "
            "move one kind to another folder"
        )


# ---------------------------------------------------------------------------------------------
# What Slurm says, and each run's state


@dataclass(frozen=True)
class SlurmView:
    """What Slurm said about a study's jobs (built by ``cifar_hpc.status.query_slurm``)."""

    queue: Mapping[str, str] | None
    """Slurm job id (``1234_5``) -> ``squeue`` state, for jobs still queued or running; None: squeue
    could not be asked (not installed, controller down)."""
    history: Mapping[str, tuple[str, ...]] | None = None
    """Slurm job id -> ``sacct`` states, oldest attempt first (a requeued job has several); None:
    no accounting, so how a job that left the queue ended is unknown."""
    notes: tuple[str, ...] = ()
    """What could not be known, in words."""


@dataclass(frozen=True)
class RunStatus:
    run: Run
    state: str
    """One of ``STATES``."""
    note: str | None = None
    """The error of a failed run, or why the state is what it is."""
    slurm_state: str | None = None


def classify(run: Run, slurm: SlurmView | None) -> RunStatus:
    """A run's state from its folder first, then from Slurm (see the module doc)."""
    if run.local == "completed":
        return RunStatus(run, "completed")
    if run.local == "failed":
        return RunStatus(run, "failed", str(run.result.get("error") or "failed (no error recorded)"))
    if run.local == "corrupt":
        return RunStatus(run, "corrupt", run.reason)
    started = " (started: config.json written)" if run.local == "started" else ""
    if run.slurm is None:  # never submitted, or run by the local executor (which waits for its runs)
        return RunStatus(run, "missing", "no result.json" + (started or "; no Slurm job for it"))
    job = run.slurm.job
    if slurm is None or slurm.queue is None:
        return RunStatus(run, "unknown", f"no result.json{started}; Slurm not asked or not reachable: job {job} "
                                             "may still be queued or running")
    history = slurm.history.get(job, ()) if slurm.history is not None else ()
    requeued_before = any(s in SLURM_REQUEUED for s in history[:-1])
    queued = slurm.queue.get(job)
    current = queued or (history[-1] if history else None)
    if current is None:
        if slurm.history is None:
            return RunStatus(run, "missing", f"job {job} is not in the queue and wrote no result.json "
                                             "(no Slurm accounting: cannot say how it ended)")
        return RunStatus(run, "missing", f"job {job} is neither queued nor in Slurm's accounting; no result.json")
    if current in SLURM_REQUEUED and (queued or current != "PREEMPTED"):
        return RunStatus(run, "requeued", f"job {job} {current}", current)
    if current in SLURM_PENDING:
        state = "requeued" if requeued_before else "pending"
        return RunStatus(run, state, f"job {job} {current}" + (" after a preemption/requeue" if requeued_before else ""), current)
    if current in SLURM_RUNNING:
        return RunStatus(run, "running", f"job {job} {current}" + (" (restarted after a requeue)" if requeued_before else ""), current)
    if current in SLURM_FAILED:
        return RunStatus(run, "failed", f"Slurm job {job} ended {current} without writing result.json", current)
    if current == "COMPLETED":
        return RunStatus(run, "missing", f"Slurm job {job} COMPLETED but wrote no result.json", current)
    return RunStatus(run, "unknown", f"job {job} in Slurm state {current}", current)


def classify_all(study: Study, slurm: SlurmView | None) -> list[RunStatus]:
    return [classify(run, slurm) for run in study.runs.values()]


def count_states(statuses: Iterable[RunStatus]) -> dict[str, int]:
    counts = Counter(s.state for s in statuses)
    return {state: counts.get(state, 0) for state in STATES}


# ---------------------------------------------------------------------------------------------
# Aggregation

METRICS = {  # result field -> (row field, how runs are combined)
    "best_val_acc": ("best_val_acc_mean", "mean"),
    "epochs_run": ("epochs_run_mean", "mean"),
    "wall_s": ("wall_s_mean", "mean"),
    "train_images_per_s": ("train_images_per_s_mean", "mean"),
    "gpu_hours": ("gpu_hours_sum", "sum"),
    "gpu_util_mean": ("gpu_util_mean", "mean"),
    "gpu_util_p95": ("gpu_util_p95", "mean"),
    "gpu_mem_peak_mib": ("gpu_mem_peak_mib", "max"),
    "lr_found": ("lr_found_mean", "mean"),
}


@dataclass
class Summary:
    """The aggregated study: what every renderer and the plot read."""

    grid: str | None
    data: str | None
    baseline_cell: str
    rows: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    missing: list[dict[str, Any]]
    running: list[dict[str, Any]]
    corrupt: list[dict[str, Any]]
    counts: dict[str, int]
    warnings: list[str]
    slurm_notes: list[str]
    confidence: float = CONFIDENCE

    @property
    def generated(self) -> bool:
        return self.data == GENERATED

    @property
    def incomplete(self) -> int:
        """Runs that are not completed (what ``--strict`` fails on)."""
        return sum(self.counts[s] for s in NOT_DONE)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": JSON_SCHEMA, "title": _title(self), "grid": self.grid, "data": self.data,
            "generated_data": self.generated,
            "baseline_cell": self.baseline_cell, "confidence": self.confidence, "counts": self.counts,
            "rows": self.rows, "failed": self.failed, "missing": self.missing, "running": self.running,
            "corrupt": self.corrupt, "warnings": self.warnings, "slurm_notes": self.slurm_notes,
        }


def paired_difference(cell: Sequence[float], base: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Mean of ``cell[i] - base[i]`` with its t-interval and two-sided p-value (same seeds, same order)."""
    d = np.asarray(cell, dtype=float) - np.asarray(base, dtype=float)
    n = len(d)
    out: dict[str, Any] = {"delta_mean": float(d.mean()) if n else None, "delta_ci_low": None, "delta_ci_high": None,
                           "delta_n_pairs": n, "p_value": None, "significant": None, "note": None}
    if n == 0:
        out["note"] = "no seed in common with the baseline"
        return out
    if n < 2:
        out["note"] = "n too small"
        return out
    se = float(d.std(ddof=1) / math.sqrt(n))
    if se == 0.0:  # every pair differs by exactly the same amount: a degenerate interval
        low = high = float(d.mean())
        out["note"] = "no spread between pairs"
    else:
        low, high = (float(x) for x in stats.t.interval(confidence, n - 1, loc=float(d.mean()), scale=se))
        out["p_value"] = float(2 * stats.t.sf(abs(float(d.mean()) / se), n - 1))
    out.update(delta_ci_low=low, delta_ci_high=high, significant=bool(low > 0 or high < 0))
    return out


def _frame(statuses: Sequence[RunStatus], warnings: list[str]) -> pd.DataFrame:
    """One row per completed run (the newest of duplicates per model, cell, seed)."""
    records = []
    for s in statuses:
        if s.state != "completed":
            continue
        r = s.run.result
        record = {"run_id": s.run.run_id, "model": s.run.model, "cell": s.run.cell, "seed": s.run.seed,
                  "test_acc": float(r["test_acc"]), "finished_at": str(r.get("finished_at") or "")}
        for key in METRICS:
            value = r.get(key)
            record[key] = float(value) if _is_number(value) else np.nan
        records.append(record)
    columns = ["run_id", "model", "cell", "seed", "test_acc", "finished_at", *METRICS]
    frame = pd.DataFrame.from_records(records, columns=columns)
    if frame.empty:
        return frame
    frame = frame.sort_values(["model", "cell", "seed", "finished_at", "run_id"])
    dupes = frame.duplicated(["model", "cell", "seed"], keep="last")
    for (model, cell, seed), group in frame[frame.duplicated(["model", "cell", "seed"], keep=False)].groupby(
            ["model", "cell", "seed"]):
        warnings.append(f"{len(group)} completed runs of {model} / {cell} / seed {seed} "
                        f"({', '.join(group['run_id'])}): using the last finished, {group['run_id'].iloc[-1]}")
    return frame[~dupes]


def _model_order(model: str) -> tuple[int, str]:
    return (MODELS.index(model) if model in MODELS else len(MODELS), model)


def aggregate(study: Study, slurm: SlurmView | None = None, *, confidence: float = CONFIDENCE) -> Summary:
    """The table: one row per (model, cell), seeds aggregated, paired differences from the baseline."""
    statuses = classify_all(study, slurm)
    warnings = list(study.warnings)
    frame = _frame(statuses, warnings)
    base_cell = study.baseline_cell

    per_key_states: dict[tuple[str, str], Counter] = {}  # (model, cell) -> state -> runs
    for s in statuses:
        if s.run.model and s.run.cell:
            per_key_states.setdefault((s.run.model, s.run.cell), Counter())[s.state] += 1

    groups = dict(tuple(frame.groupby(["model", "cell"]))) if not frame.empty else {}
    rows = []
    for (model, cell), by_state in per_key_states.items():
        group = groups.get((model, cell))
        row: dict[str, Any] = {
            "model": model, "cell": cell, "is_baseline": cell == base_cell,
            "n": 0 if group is None else len(group),
            "expected": sum(by_state.values()),
            "seeds": [], "run_ids": [], "test_acc_mean": None, "test_acc_std": None,
        }
        if group is not None:
            row["seeds"] = [int(x) for x in group["seed"]]
            row["run_ids"] = list(group["run_id"])
            row["test_acc_mean"] = float(group["test_acc"].mean())
            row["test_acc_std"] = float(group["test_acc"].std(ddof=1)) if len(group) > 1 else None
        row.update(_difference(group, groups.get((model, base_cell)), cell == base_cell, confidence))
        for key, (name, how) in METRICS.items():
            values = group[key].dropna() if group is not None else pd.Series(dtype=float)
            row[name] = float(getattr(values, how)()) if len(values) else None
        row.update(n_failed=by_state["failed"], n_running=sum(by_state[s] for s in IN_PROGRESS),
                   n_missing=by_state["missing"] + by_state["unknown"], n_corrupt=by_state["corrupt"])
        rows.append(row)
    rows.sort(key=lambda r: (_model_order(r["model"]), not r["is_baseline"], r["delta_mean"] is None,
                             -(r["delta_mean"] or 0.0), r["cell"]))
    if rows and not any(r["is_baseline"] for r in rows):
        warnings.append(f"no row is the baseline cell {base_cell!r}: no differences (choose one with --baseline)")

    def ident(s: RunStatus) -> dict[str, Any]:
        return {"run_id": s.run.run_id, "model": s.run.model, "cell": s.run.cell, "seed": s.run.seed}

    ordered = sorted(statuses, key=lambda s: (_model_order(s.run.model or ""), s.run.cell != base_cell, s.run.cell or "",
                                              -1 if s.run.seed is None else s.run.seed, s.run.run_id))
    failed = [{**ident(s), "error": s.note, "slurm_job": s.run.slurm.job if s.run.slurm else None,
               "log": s.run.slurm.log if s.run.slurm else None} for s in ordered if s.state == "failed"]
    missing = [{**ident(s), "state": s.state, "note": s.note} for s in ordered if s.state in ("missing", "unknown")]
    running = [{**ident(s), "state": s.state, "slurm_job": s.run.slurm.job if s.run.slurm else None}
               for s in ordered if s.state in IN_PROGRESS]
    corrupt = [{"run_id": s.run.run_id, "path": f"{s.run.run_id}/{RESULT_FILE}", "reason": s.note}
               for s in ordered if s.state == "corrupt"]
    return Summary(grid=study.grid, data=study.data, baseline_cell=base_cell, rows=[_clean(r) for r in rows],
                   failed=failed, missing=missing, running=running, corrupt=corrupt, counts=count_states(statuses),
                   warnings=warnings, slurm_notes=list(slurm.notes) if slurm else [], confidence=confidence)


def _difference(group: pd.DataFrame | None, base: pd.DataFrame | None, is_baseline: bool,
                confidence: float) -> dict[str, Any]:
    empty = {"delta_mean": None, "delta_ci_low": None, "delta_ci_high": None, "delta_n_pairs": 0,
             "p_value": None, "significant": None}
    if is_baseline:
        return {**empty, "note": "baseline"}
    if group is None:
        return {**empty, "note": "no completed run"}
    if base is None:
        return {**empty, "note": "no completed baseline run"}
    paired = group.merge(base, on="seed", suffixes=("", "_base")).sort_values("seed")
    return paired_difference(paired["test_acc"], paired["test_acc_base"], confidence)


def _clean(value: Any) -> Any:
    """JSON-ready: NaN -> None, floats to 6 significant digits (stable golden files)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return None if not math.isfinite(value) else float(f"{value:.6g}")
    if isinstance(value, np.integer):
        return int(value)
    return value


def collect(root: str | Path, slurm: SlurmView | None = None, *, baseline: str | None = None) -> Summary:
    """``load_study`` + ``aggregate``."""
    return aggregate(load_study(root, baseline=baseline), slurm)


# ---------------------------------------------------------------------------------------------
# Rendering: small pure functions, Summary -> text


def _title(s: Summary) -> str:
    title = f"Study {s.grid}" if s.grid else "Runs"
    data = {"cifar10": "CIFAR-10", GENERATED: "GENERATED DATA, not CIFAR-10"}.get(s.data or "", s.data or "data unknown")
    return f"{title}: test accuracy ({data})"


def _legend(s: Summary) -> str:
    pct = round(s.confidence * 100)
    return (f"acc in %, mean ± std over seeds; n = completed/expected runs; Δ = difference from the same model's "
            f"'{s.baseline_cell}' in percentage points, paired by seed, [{pct}% CI, t-distribution]; "
            f"* = CI excludes 0; other columns: means over seeds, GPU-h summed, util/p95 = GPU utilisation mean/95th "
            f"percentile, peak MiB = max GPU memory")


def _pct(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}"


def _signed_pp(x: float) -> str:
    return f"{100 * x:+.2f}"


def _delta_text(row: dict[str, Any], mark: str = " *") -> str:
    if row["is_baseline"]:
        return "baseline"
    if row["delta_mean"] is None:
        return row["note"] or "—"
    text = _signed_pp(row["delta_mean"])
    if row["delta_ci_low"] is not None:
        text += f" [{_signed_pp(row['delta_ci_low'])}, {_signed_pp(row['delta_ci_high'])}]"
        if row["significant"]:
            text += mark
    if row["note"] and row["note"] != "baseline":
        text += f" ({row['note']})"
    return text


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _num(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


DISPLAY_HEADERS = ("model", "cell", "n", "test acc %", "Δ pp [95% CI]", "best val %", "epochs", "wall",
                   "img/s", "GPU-h", "util %", "p95 %", "peak MiB", "LR found")


def display_rows(s: Summary, mark: str = " *") -> list[list[str]]:
    """The table as text cells (shared by the rich, Markdown and LaTeX renderers)."""
    out = []
    for r in s.rows:
        acc = "—" if r["test_acc_mean"] is None else _pct(r["test_acc_mean"]) + (
            f" ± {_pct(r['test_acc_std'])}" if r["test_acc_std"] is not None else "")
        n = f"{r['n']}/{r['expected']}"
        out.append([
            r["model"], r["cell"], n, acc, _delta_text(r, mark), _pct(r["best_val_acc_mean"]),
            _num(r["epochs_run_mean"], ".1f"), _duration(r["wall_s_mean"]), _num(r["train_images_per_s_mean"], ",.0f"),
            _num(r["gpu_hours_sum"], ".2f"), _num(r["gpu_util_mean"], ".0f"), _num(r["gpu_util_p95"], ".0f"),
            _num(r["gpu_mem_peak_mib"], ",.0f"), _num(r["lr_found_mean"], ".3g"),
        ])
    return out


def _list_lines(s: Summary) -> list[tuple[str, list[str]]]:
    """The runs outside the table, as (heading, one-line items)."""

    def who(x: dict[str, Any]) -> str:
        seed = "?" if x["seed"] is None else x["seed"]
        return f"{x['run_id']} {x['model'] or '?'} / {x['cell'] or '?'} / seed {seed}"

    sections: list[tuple[str, list[str]]] = []
    if s.failed:
        sections.append((f"Failed ({len(s.failed)})", [
            f"{who(x)}: {x['error']}" + (f" (log: {x['log']})" if x["log"] else "") for x in s.failed]))
    if s.running:
        sections.append((f"Running or queued ({len(s.running)})", [
            f"{who(x)}: {x['state']}" + (f", Slurm job {x['slurm_job']}" if x["slurm_job"] else "") for x in s.running]))
    if s.missing:
        sections.append((f"Missing ({len(s.missing)})", [f"{who(x)}: {x['note']}" for x in s.missing]))
    if s.corrupt:
        sections.append((f"Corrupt result.json, not counted ({len(s.corrupt)})", [
            f"{x['path']}: {x['reason']}" for x in s.corrupt]))
    if s.warnings:
        sections.append(("Warnings", list(s.warnings)))
    if s.slurm_notes:
        sections.append(("Slurm", list(s.slurm_notes)))
    return [(heading, [" ".join(str(line).split()) for line in lines]) for heading, lines in sections]  # one line each


DROP_ORDER = (13, 11, 12, 10, 8, 6, 5, 9, 7)
"""Display columns given up first when the terminal is too narrow (LR, p95, peak MiB, util, img/s, ...)."""


def fit_columns(rows: Sequence[Sequence[str]], width: int) -> list[int]:
    """Indices of the display columns that fit in ``width`` characters (rich's box: 3 per column + 1)."""
    def need(i: int) -> int:
        return max([len(DISPLAY_HEADERS[i])] + [len(r[i]) for r in rows]) + 3

    keep = list(range(len(DISPLAY_HEADERS)))
    for i in DROP_ORDER:
        if sum(need(j) for j in keep) + 1 <= width:
            break
        keep.remove(i)
    return keep


def render_rich(s: Summary, width: int | None = 160, console: Any = None) -> str:
    """The terminal table (rich). With ``console`` it prints there (colour, real width) and returns ""."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    buffer = io.StringIO()
    out = console or Console(file=buffer, width=width, color_system=None, force_terminal=False, legacy_windows=False)
    rows = display_rows(s)
    keep = fit_columns(rows, out.width)
    table = Table(title=_title(s), caption=_legend(s), caption_justify="left", title_style="bold")
    right = set(DISPLAY_HEADERS[2:4] + DISPLAY_HEADERS[5:])
    fits = sum(max([len(DISPLAY_HEADERS[i])] + [len(r[i]) for r in rows]) + 3 for i in keep) + 1 <= out.width
    for i in keep:
        header = DISPLAY_HEADERS[i]
        table.add_column(header, justify="right" if header in right else "left", no_wrap=fits)
    previous = None
    for row, cells in zip(s.rows, rows):
        if previous is not None and row["model"] != previous:
            table.add_section()
        previous = row["model"]
        style = "bold" if row["significant"] else None
        table.add_row(*(cells[i] for i in keep), style=style)
    if s.generated:
        out.print(Text("GENERATED DATA: these accuracies say nothing about CIFAR-10", style="bold red"))
    out.print(table)
    if len(keep) < len(DISPLAY_HEADERS):
        hidden = ", ".join(DISPLAY_HEADERS[i] for i in range(len(DISPLAY_HEADERS)) if i not in keep)
        out.print(Text(f"(hidden at this terminal width: {hidden}; widen the terminal or use --format md)"))
    for heading, lines in _list_lines(s):
        out.print(Text(heading, style="bold"))
        for line in lines:
            out.print(Text(f"  {line}"))
    return buffer.getvalue()


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("*", "\\*")


def render_md(s: Summary) -> str:
    lines = [f"# {_title(s)}", ""]
    if s.generated:
        lines += ["**GENERATED DATA: these accuracies say nothing about CIFAR-10.**", ""]
    lines += [_md_escape(_legend(s)), ""]
    lines.append("| " + " | ".join(DISPLAY_HEADERS) + " |")
    lines.append("|" + "|".join("---" if i < 2 else "---:" for i in range(len(DISPLAY_HEADERS))) + "|")
    for cells in display_rows(s):
        lines.append("| " + " | ".join(_md_escape(c) for c in cells) + " |")
    for heading, items in _list_lines(s):
        lines += ["", f"## {heading}", ""]
        lines += [f"- {_md_escape(item)}" for item in items]
    return "\n".join(lines) + "\n"


CSV_COLUMNS = (
    "data", "model", "cell", "is_baseline", "n", "expected", "test_acc_mean", "test_acc_std", "delta_mean",
    "delta_ci_low", "delta_ci_high", "delta_n_pairs", "p_value", "significant", "note", "best_val_acc_mean",
    "epochs_run_mean", "wall_s_mean", "train_images_per_s_mean", "gpu_hours_sum", "gpu_util_mean", "gpu_util_p95",
    "gpu_mem_peak_mib", "lr_found_mean", "n_failed", "n_running", "n_missing", "n_corrupt",
)


def render_csv(s: Summary) -> str:
    """One line per row, raw numbers (fractions, seconds); the ``data`` column labels generated data."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in s.rows:
        values = {"data": s.data or "", **row}
        writer.writerow(["" if (v := values[c]) is None else str(v).lower() if isinstance(v, bool) else v
                         for c in CSV_COLUMNS])
    return buffer.getvalue()


def render_json(s: Summary) -> str:
    return json.dumps(s.to_dict(), indent=2, sort_keys=False) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def render_latex(s: Summary) -> str:
    """A booktabs ``table``; the runs outside the table follow as LaTeX comments."""
    def cell(text: str) -> str:
        text = latex_escape(text).replace("±", r"$\pm$").replace("—", "--").replace("Δ", r"$\Delta$")
        return text.replace("SIGMARK", r"$^{*}$")

    headers = [cell(h) for h in DISPLAY_HEADERS]
    caption = latex_escape(_title(s) + ". " + _legend(s)).replace("±", r"$\pm$").replace("Δ", r"$\Delta$")
    if s.generated:
        caption = r"\textbf{GENERATED DATA, not CIFAR-10.} " + caption
    lines = [
        "% generated by cifar-hpc collect; needs \\usepackage{booktabs}",
        r"\begin{table}[t]", r"\centering", r"\scriptsize",
        r"\begin{tabular}{ll" + "r" * (len(DISPLAY_HEADERS) - 2) + "}", r"\toprule",
        " & ".join(headers) + r" \\", r"\midrule",
    ]
    previous = None
    for row, cells in zip(s.rows, display_rows(s, mark="SIGMARK")):
        if previous is not None and row["model"] != previous:
            lines.append(r"\midrule")
        previous = row["model"]
        lines.append(" & ".join(cell(c) for c in cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}",
              rf"\label{{tab:{re.sub(r'[^A-Za-z0-9:.-]', '-', s.grid or 'runs')}}}", r"\end{table}"]
    for heading, items in _list_lines(s):
        lines.append(f"% {heading}:")
        lines += [f"%   {item}" for item in items]
    return "\n".join(lines) + "\n"


RENDERERS = {"rich": render_rich, "md": render_md, "csv": render_csv, "json": render_json, "latex": render_latex}


def render(s: Summary, fmt: str) -> str:
    try:
        renderer = RENDERERS[fmt]
    except KeyError:
        raise UserError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}") from None
    return renderer(s)


# ---------------------------------------------------------------------------------------------
# Plots (matplotlib's object API on the Agg canvas: no pyplot state, no display needed)

PLOT_DPI = 100
PANEL_WIDTH_IN = 5.0


def effects_plot_size(n_models: int, n_cells: int) -> tuple[int, int]:
    """Pixel size of ``plot_effects``'s PNG: a 5-inch panel per model, 0.4 inch per cell, at 100 dpi."""
    width_in = PANEL_WIDTH_IN * max(1, n_models)
    height_in = max(3.0, 1.4 + 0.4 * n_cells)
    return round(width_in * PLOT_DPI), round(height_in * PLOT_DPI)


def plot_effects(s: Summary, path: str | Path) -> Path:
    """Difference from the baseline per cell with its CI as error bars, one panel per model."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    models = list(dict.fromkeys(r["model"] for r in s.rows))
    cells = [r for r in s.rows if not r["is_baseline"]]
    if not models:
        raise UserError("nothing to plot: the study has no rows")
    per_model = {m: [r for r in cells if r["model"] == m] for m in models}
    n_cells = max((len(v) for v in per_model.values()), default=0)
    width, height = effects_plot_size(len(models), n_cells)
    fig = Figure(figsize=(width / PLOT_DPI, height / PLOT_DPI), dpi=PLOT_DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    for ax, model in zip(axes, models):
        rows = list(reversed(per_model[model]))  # best effect on top
        ys = np.arange(len(rows))
        for y, r in zip(ys, rows):
            if r["delta_mean"] is None:
                ax.text(0, y, r["note"] or "no data", va="center", ha="center", fontsize=7, color="grey")
                continue
            x = 100 * r["delta_mean"]
            if r["delta_ci_low"] is not None:
                err = [[x - 100 * r["delta_ci_low"]], [100 * r["delta_ci_high"] - x]]
            else:
                err = None
            color = "tab:green" if r["significant"] and x > 0 else "tab:red" if r["significant"] else "tab:grey"
            ax.errorbar([x], [y], xerr=err, fmt="o", color=color, capsize=3)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(ys, [f"{r['cell']} (n={r['delta_n_pairs']})" for r in rows], fontsize=8)
        ax.set_ylim(-0.7, max(len(rows), 1) - 0.3)
        ax.set_xlabel(f"Δ test acc vs {s.baseline_cell} (pp, {round(100 * s.confidence)}% CI)")
        ax.set_title(model)
        ax.grid(axis="x", alpha=0.3)
    title = _title(s)
    fig.suptitle(title, color="red" if s.generated else "black", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=PLOT_DPI)
    return path


GPU_PLOT_SIZE = (900, 600)
"""Pixel size of ``plot_gpu``'s PNG."""


def find_run(study: Study, run_id: str) -> Run:
    """A run by id or an unambiguous prefix of it."""
    if run_id in study.runs:
        return study.runs[run_id]
    matches = [r for r in study.runs.values() if r.run_id.startswith(run_id)]
    if len(matches) != 1:
        raise UserError(f"run {run_id!r} {'is ambiguous' if matches else 'is not'} in {study.root}"
                        + (f" ({', '.join(sorted(m.run_id for m in matches))})" if matches else ""))
    return matches[0]


def plot_gpu(run_dir: str | Path, path: str | Path, title: str | None = None) -> Path:
    """GPU utilisation and memory over time of one run, one line per (node, GPU), from its
    ``gpu.node*.jsonl`` files."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cifar_hpc.telemetry import (
        read_samples,  # imports lightning: only when a GPU plot is asked for
    )

    samples = read_samples(run_dir)
    if not samples:
        raise UserError(f"no GPU samples in {run_dir} (gpu.node*.jsonl): the run had no NVML or has not started")
    t0 = min(float(r["t"]) for r in samples if _is_number(r.get("t")))
    fig = Figure(figsize=(GPU_PLOT_SIZE[0] / PLOT_DPI, GPU_PLOT_SIZE[1] / PLOT_DPI), dpi=PLOT_DPI)
    FigureCanvasAgg(fig)
    util_ax, mem_ax = fig.subplots(2, 1, sharex=True)
    series: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in samples:
        if _is_number(r.get("t")):
            series.setdefault((str(r["host"]), int(r["gpu"])), []).append(r)
    for (host, gpu), rows in sorted(series.items()):
        rows.sort(key=lambda r: r["t"])
        minutes = np.array([(float(r["t"]) - t0) / 60 for r in rows])
        util = np.array([r["util_pct"] if _is_number(r.get("util_pct")) else np.nan for r in rows], dtype=float)
        mem = np.array([r["mem_used_mib"] if _is_number(r.get("mem_used_mib")) else np.nan for r in rows], dtype=float)
        if len(minutes) > 2:  # a requeued run's gap (no samples while it waited) is drawn as a gap
            steps = np.diff(minutes)
            gaps = np.flatnonzero(steps > 10 * max(float(np.median(steps)), 1e-9)) + 1
            minutes, util, mem = (np.insert(a, gaps, np.nan) for a in (minutes, util, mem))
        label = f"{host} gpu{gpu}"
        util_ax.plot(minutes, util, label=label, linewidth=1)
        mem_ax.plot(minutes, mem, label=label, linewidth=1)
    util_ax.set_ylabel("GPU utilisation %")
    util_ax.set_ylim(0, 105)
    mem_ax.set_ylabel("memory used MiB")
    mem_ax.set_xlabel("minutes since the first sample")
    util_ax.legend(fontsize=7, loc="lower right")
    util_ax.set_title(title or f"GPU telemetry of {Path(run_dir).name}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=PLOT_DPI)
    return path


# ---------------------------------------------------------------------------------------------
# W&B (optional): the final table as a wandb.Table, and pushing offline runs once a network is at hand

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
    run = wandb.init(project=project or _wandb_project(study), group=grid, job_type=SUMMARY_JOB_TYPE,
                     id=run_id, name=f"{grid} summary", dir=str(study.root), resume="allow",
                     mode="offline" if wandb_offline(mode) else "online",
                     tags=[GENERATED] if s.generated else [],
                     config={"grid": grid, "baseline_cell": s.baseline_cell, "data": s.data})
    try:
        rows = [[None if (v := ({"data": s.data, **r})[c]) is None else v for c in CSV_COLUMNS] for r in s.rows]
        run.log({"results": wandb.Table(columns=list(CSV_COLUMNS), data=rows, allow_mixed_types=True)})
        run.summary.update({"generated_data": s.generated, "title": _title(s),
                            **{f"runs/{state}": n for state, n in s.counts.items()}})
        folder = Path(run.dir).parent  # .../wandb/offline-run-<time>-<id>/files -> the run folder
    finally:
        run.finish()
    return folder

