"""A study as found on disk: its ``study.json`` (``cifar_hpc.study.manifest``) and its run folders.

**The study folder** ``runs/<grid>/``: ``study.json`` (the grid, ``baseline_cell``, every expected run
with its cell/model/seed, one ``JobRecord`` per submission) and one folder per run, ``<run_id>/``
with ``config.json`` and, once finished, ``result.json`` (``cifar_hpc.training.results``). A folder
of plain ``cifar-hpc train`` runs, without ``study.json``, is read too: the cell of a run without a
``cell`` label is the ``+``-joined names of its tricks (``crop+flip``), and missing runs cannot be
listed. Which folders are studies is ``cifar_hpc.study.folders``'; ``cifar_hpc.study.run_lookup`` finds a run by id.

Where each run stands is ``cifar_hpc.study.states``' one classifier.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifar_hpc.base.errors import UserError
from cifar_hpc.cluster.processes import ProcessRef
from cifar_hpc.config.train_config import setting_of
from cifar_hpc.study.folders import check_study_folder, is_run_folder, studies_below
from cifar_hpc.study.manifest import DEFAULT_BASELINE, STUDY_FILE, JobRecord, parse_time, read_manifest
from cifar_hpc.study.run_state import RunState
from cifar_hpc.training.results import CONFIG_FILE, RESULT_FILE, SCHEMA_VERSION, result_problem

LOCAL_LOG = "train.log"
"""The log a run trained by the local executor writes in its own folder (``cifar_hpc.study.run_logs``)."""


@dataclass(frozen=True)
class SlurmTask:
    """The Slurm job that runs one run: ``1234_5`` for task 5 of array 1234, or ``1234``."""

    job: str
    log: str | None
    """Its log file, from the job's ``log_pattern``."""
    submitted_at: float | None = None
    """When it was submitted (POSIX seconds), from ``study.json``; None when not recorded."""
    pack: int = 1
    """Runs this task trains one after another (``submit --pack``)."""


@dataclass(frozen=True)
class LocalTask:
    """The local submission that trains (or trained) a run: ``submit --executor local``."""

    process: ProcessRef | None
    """The process that trains it; None when not recorded (a study.json written before cifar-hpc recorded it)."""
    submitted_at: float | None
    log: str
    """Its log file, ``<run folder>/train.log`` (``cifar_hpc.study.run_logs``)."""


@dataclass
class RecordedRun:
    """One run of the study as found on disk (and in ``study.json``)."""

    run_id: str
    model: str | None
    cell: str | None
    seed: int | None
    recorded: RunState | None = None
    """What its ``result.json`` says (completed, failed, or corrupt when unreadable); None: no result."""
    config_written: float | None = None
    """When ``config.json`` was last written (POSIX seconds): training writes it as each attempt starts."""
    result_written: float | None = None
    """When ``result.json`` was written (its ``finished_at``, else the file's time); None: no result.
    A result older than the run's newest submission is an earlier attempt's."""
    result: dict[str, Any] | None = None
    reason: str | None = None
    """Why ``result.json`` is corrupt."""
    slurm: SlurmTask | None = None
    """Its newest Slurm job (a later submission of the same run replaces an earlier one)."""
    local: LocalTask | None = None
    """Its newest submission when that was local (then ``slurm`` is None): one of the two at most."""
    expected: bool = False
    """Listed in ``study.json``."""
    axes: dict[str, Any] | None = None
    """Its non-seed axis values, model included (``study.json``); None: not recorded."""
    compare_to: str | None = None
    """The cell its row is compared with (``study.json``); see ``compare_to_known``."""
    compare_to_known: bool = False
    """``study.json`` said which cell it compares to (None there: it is a reference)."""
    setting: str | None = None
    """``config.setting_of`` its config: what its seeds share; None when no config is known."""
    expansion: int = 0
    """The latest grid expansion (submission) that listed it; 0: unknown."""
    grid_defined: int = 0
    """The latest expansion that listed it as the grid's file defines it (no ``--set``); 0: none, or not
    recorded (``cifar_hpc.report.versions`` shows each cell as the grid defines it)."""
    changes: tuple[str, ...] | None = None
    """The settings its comparison changes against its reference's run (``study.json``); None: not recorded."""
    config: dict[str, Any] | None = None
    """Its config as written (the result's, else ``config.json``); None when it never started."""
    submitted_code: dict[str, Any] | None = None
    """The code version its newest submission recorded (``cifar_hpc.study.code_version``); None: not recorded."""

    @property
    def started(self) -> bool:
        """Its folder holds a ``config.json`` (training began at least once)."""
        return self.config_written is not None


@dataclass
class Study:
    root: Path
    grid: str | None
    baseline_cell: str
    runs: dict[str, RecordedRun]
    has_manifest: bool
    """``study.json`` was found: missing runs can be listed."""
    warnings: list[str] = field(default_factory=list)

    @property
    def data(self) -> str | None:
        kinds = {r.result.get("data") for r in self.runs.values() if r.result is not None} - {None}
        return kinds.pop() if len(kinds) == 1 else None

    def slurm_jobs(self) -> list[str]:
        return [run.slurm.job for run in self.runs.values() if run.slurm is not None]


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


def read_run(folder: Path) -> tuple[RunState | None, dict[str, Any] | None, str | None]:
    """``(recorded state, result, reason)`` of one run folder; never raises on a bad file."""
    try:
        text = (folder / RESULT_FILE).read_bytes()
    except FileNotFoundError:
        return None, None, None
    except OSError as e:
        return RunState.CORRUPT, None, f"cannot read: {e.strerror or e}"
    if not text.strip():
        return RunState.CORRUPT, None, "empty file (half-written?)"
    try:
        result = json.loads(text)  # bytes: UTF-8/16/32 detected; undecodable bytes are a ValueError too
    except ValueError as e:
        return RunState.CORRUPT, None, f"not valid JSON (half-written?): {e}"
    problem = result_problem(result)
    if problem:
        return RunState.CORRUPT, None, problem
    return RunState(result["status"]), result, None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _read_config(folder: Path) -> dict[str, Any] | None:
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def load_study(root: str | Path, *, baseline: str | None = None, check_mixing: bool = True) -> Study:
    """Read ``study.json`` (if any) and every run folder of a study. Refuses (``UserError``) a folder
    that is not a study and, unless ``check_mixing`` is off (``status`` and ``run_lookup`` only look),
    what must not share one table: runs of two grids, generated mixed with real data, or the runs of
    a folder that holds studies below it rather than being one."""
    root = Path(root)
    check_study_folder(root)
    manifest = read_manifest(root)
    if manifest is None and check_mixing:
        _refuse_studies_below(root)
    runs = _expected_runs(root, manifest)
    _attach_jobs(root, manifest, runs)
    warnings: list[str] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "logs"))):
        if folder.name not in runs and not is_run_folder(folder):
            continue
        run = runs.setdefault(folder.name, RecordedRun(run_id=folder.name, model=None, cell=None, seed=None))
        warnings += _read_folder(folder, run)
    if manifest is None and not runs:
        raise UserError(
            f"{root} is not a study folder: no {STUDY_FILE} and no run folders with {RESULT_FILE} or {CONFIG_FILE}"
        )
    grid = _one_grid(root, manifest, runs, check_mixing)
    if check_mixing:
        _refuse_mixed_data(runs)
    if manifest is None:
        warnings.append(f"no {STUDY_FILE} in {root}: runs that never started cannot be listed as missing")
    return Study(
        root=root,
        grid=grid,
        baseline_cell=baseline or (manifest or {}).get("baseline_cell") or DEFAULT_BASELINE,
        runs=runs,
        has_manifest=manifest is not None,
        warnings=warnings,
    )


def _refuse_studies_below(root: Path) -> None:
    studies = studies_below(root)
    if studies:
        what = "a study in a folder below it" if len(studies) == 1 else f"{len(studies)} studies"
        raise UserError(
            f"{root} holds {what}, not one itself: "
            + ", ".join(str(p) for p in studies)
            + f"; name {'it' if len(studies) == 1 else 'one of them'} (runs of different studies are never seeds of one row)"
        )


def _expected_runs(root: Path, manifest: Mapping[str, Any] | None) -> dict[str, RecordedRun]:
    """The runs ``study.json`` lists, as submitted (their folders are read next)."""
    runs: dict[str, RecordedRun] = {}
    for entry in (manifest or {}).get("runs", []):
        if not isinstance(entry, dict) or not isinstance(entry.get("run_id"), str):
            raise UserError(f"{root / STUDY_FILE}: a run entry has no run_id: {entry!r}")
        runs[entry["run_id"]] = RecordedRun(
            run_id=entry["run_id"],
            model=entry.get("model"),
            cell=entry.get("cell"),
            seed=entry.get("seed"),
            expected=True,
            axes=entry["axes"] if isinstance(entry.get("axes"), dict) else None,
            compare_to=entry.get("compare_to"),
            compare_to_known="compare_to" in entry,
            setting=entry.get("setting"),
            expansion=int(entry.get("expansion") or 0),
            grid_defined=int(entry.get("grid_defined") or 0),
            changes=tuple(entry["changes"]) if isinstance(entry.get("changes"), list) else None,
        )
    return runs


def _attach_jobs(root: Path, manifest: Mapping[str, Any] | None, runs: Mapping[str, RecordedRun]) -> None:
    """Give each expected run its newest submission: its Slurm task, or the local process training it."""
    for entry in (manifest or {}).get("jobs", []):
        job = JobRecord.from_dict(entry)
        packs = Counter(job.task_ids)
        for i, run_id in enumerate(job.run_ids):
            if run_id not in runs:
                continue
            run = runs[run_id]  # later submissions replace earlier ones, Slurm's and local alike
            run.submitted_code = job.code
            if job.job_id is not None:
                pack = packs[job.task_ids[i]] if i < len(job.task_ids) else 1
                run.slurm, run.local = SlurmTask(job.slurm_id(i), job.log(i), parse_time(job.submitted_at), pack), None
            elif job.executor == "local":
                process = ProcessRef(job.host, int(job.pid), job.process_start) if job.host and job.pid else None
                log = str(root.resolve() / run_id / LOCAL_LOG)
                run.slurm, run.local = None, LocalTask(process, parse_time(job.submitted_at), log)


def _read_folder(folder: Path, run: RecordedRun) -> list[str]:
    """Fill in what the run's folder records (result, config, when each was written); returns warnings."""
    run.recorded, run.result, run.reason = read_run(folder)
    run.config_written = _mtime(folder / CONFIG_FILE)
    if run.recorded is not None:
        finished = parse_time(run.result.get("finished_at")) if run.result else None
        run.result_written = finished if finished is not None else _mtime(folder / RESULT_FILE)
    source = run.result.get("config") if run.result else _read_config(folder)
    if isinstance(source, dict):
        # study.json's setting is what was submitted under this run id; a result's own config
        # can be an older attempt's (written by another version, or by hand)
        run.config, run.setting = source, run.setting or setting_of(source)
    if source:
        run.model = source.get("model", run.model)
        run.cell = cell_of(run.result) if run.result else (source.get("cell") or run.cell)
        run.seed = source.get("seed", run.seed)
    warnings = []
    if run.result and run.result.get("run_id") not in (None, run.run_id):
        warnings.append(f"{folder.name}/{RESULT_FILE} names run {run.result['run_id']}: taken as {folder.name}")
    if run.result and run.result.get("schema", SCHEMA_VERSION) > SCHEMA_VERSION:
        warnings.append(f"{folder.name}/{RESULT_FILE} has schema {run.result['schema']} (newer than this cifar-hpc)")
    return warnings


def _one_grid(root: Path, manifest: dict[str, Any] | None, runs: Mapping[str, RecordedRun], check: bool) -> str | None:
    grids = Counter(r.result["config"].get("grid") for r in runs.values() if r.result is not None)
    if manifest is not None and manifest.get("grid") is not None:
        grids.setdefault(manifest["grid"], 0)
        if not check:
            return manifest["grid"]
    if len(grids) > 1 and check:
        listed = ", ".join(
            f"{g if g is not None else '(no grid label)'}: {n} runs" for g, n in sorted(grids.items(), key=str)
        )
        raise UserError(f"{root} mixes runs of {len(grids)} different grids ({listed}); collect one grid at a time")
    return next(iter(grids)) if len(grids) == 1 else None


def _refuse_mixed_data(runs: Mapping[str, RecordedRun]) -> None:
    kinds = Counter(r.result.get("data") for r in runs.values() if r.result is not None)
    kinds.pop(None, None)
    if len(kinds) > 1:
        listed = ", ".join(f"{n} on {kind}" for kind, n in sorted(kinds.items()))
        raise UserError(
            f"refusing to put results on generated data and on real CIFAR-10 in one table ({listed}); "
            "move one kind to another folder"
        )
