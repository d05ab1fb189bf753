"""A study on disk: ``study.json`` (one reader, one writer, one job record) and its run folders.

**The study folder** ``runs/<grid>/``: ``study.json`` (written by ``cifar-hpc submit`` through
``record_submission``, under ``launch.study_lock``: the grid, ``baseline_cell``, every expected run
with its cell/model/seed, and one ``JobRecord`` per submission) and one folder per run,
``<run_id>/`` with ``config.json`` and, once finished, ``result.json`` (``cifar_hpc.training.results``). A
folder of plain ``cifar-hpc train`` runs, without ``study.json``, is read too: the cell of a run
without a ``cell`` label is the ``+``-joined names of its tricks (``crop+flip``), and missing runs
cannot be listed.

Where each run stands is ``cifar_hpc.study.states``' one classifier.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cifar_hpc.base.errors import UserError
from cifar_hpc.cluster.processes import ProcessRef
from cifar_hpc.config.train_config import setting_of
from cifar_hpc.study.run_state import RunState
from cifar_hpc.training.results import CONFIG_FILE, RESULT_FILE, SCHEMA_VERSION, result_problem, write_json_atomic

STUDY_FILE = "study.json"
STUDY_SCHEMA = 1
DEFAULT_BASELINE = "baseline"
LOCAL_LOG = "train.log"
"""The log a run trained by the local executor writes in its own folder (``cifar_hpc.study.run_logs``)."""


# --- study.json: one reader, one writer, one job record ---------------------------------------------


@dataclass(frozen=True)
class JobRecord:
    """One submission: a Slurm job (an array, or a plain job for a single run) or a local batch."""

    run_ids: tuple[str, ...]
    submitted_at: str
    job_id: str | None = None
    """Slurm's id of the array (or of the plain job); None for the local executor."""
    array: bool = False
    """True: run ``i`` is array task ``task_ids[i]`` (``<job_id>_<task>``); False: run 0 is the job."""
    task_ids: tuple[int, ...] = ()
    log_pattern: str | None = None
    """Slurm's log path with ``%A``/``%a``/``%j`` left in (``log_path`` fills them)."""
    executor: str = "slurm"
    host: str | None = None
    """Local executor: the host, pid and start (``cifar_hpc.cluster.processes``) of the process training the
    runs, so that ``status`` tells a live local submission from one that was stopped."""
    pid: int | None = None
    process_start: str | None = None

    def slurm_id(self, index: int) -> str | None:
        """Slurm's id of the ``index``-th run's job: ``<array>_<task>`` or the plain job id."""
        if self.job_id is None:
            return None
        return f"{self.job_id}_{self.task_ids[index]}" if self.array else str(self.job_id)

    def log(self, index: int) -> str | None:
        if self.job_id is None:
            return None
        return log_path(self.log_pattern, str(self.job_id), self.task_ids[index] if self.array else None)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "run_ids": list(self.run_ids), "task_ids": list(self.task_ids)}

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> JobRecord:
        job_id = entry.get("job_id")
        return cls(
            run_ids=tuple(entry.get("run_ids", ())),
            submitted_at=str(entry.get("submitted_at", "")),
            job_id=None if job_id is None else str(job_id),
            array=bool(entry.get("array")),
            task_ids=tuple(entry.get("task_ids") or ()),
            log_pattern=entry.get("log_pattern"),
            executor=entry.get("executor") or ("local" if job_id is None else "slurm"),
            host=entry.get("host"),
            pid=entry.get("pid"),
            process_start=entry.get("process_start"),
        )


def log_path(pattern: str | None, job_id: str, task_id: int | None) -> str | None:
    """Fill in Slurm's ``%A`` (array id), ``%a`` (task), ``%j`` (job id), ``%%`` of a log pattern."""
    if not pattern:
        return None
    task = str(task_id) if task_id is not None else ""
    replacements = {"%%": "%", "%A": job_id, "%a": task, "%j": f"{job_id}_{task}" if task else job_id, "%J": job_id}
    return re.sub(r"%%|%A|%a|%j|%J", lambda m: replacements[m.group(0)], pattern)


def read_manifest(root: Path) -> dict[str, Any] | None:
    """``study.json`` as written by ``record_submission``; None when there is none; ``UserError`` when
    it cannot be used (a submission never overwrites a study.json it cannot read)."""
    path = root / STUDY_FILE
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not valid JSON ({e}); was it written by cifar-hpc submit?") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("runs"), list):
        raise UserError(f"{path} has no 'runs' list; was it written by cifar-hpc submit?")
    if manifest.get("schema", STUDY_SCHEMA) != STUDY_SCHEMA:
        raise UserError(f"{path} has schema {manifest.get('schema')!r}; this cifar-hpc reads schema {STUDY_SCHEMA}")
    return manifest


def record_submission(
    folder: Path, *, grid: str, baseline_cell: str, runs: Iterable[Mapping[str, Any]], jobs: Sequence[JobRecord]
) -> None:
    """Merge the expected runs (``run_id``, ``cell``, ``model``, ``seed``, ``out_dir``) and new jobs
    into ``study.json``, atomically. The caller holds ``launch.study_lock(folder)`` (taking it here
    again would deadlock): the record is made under the same lock as the decision to submit.

    Each call with runs is one *expansion* of the grid: its runs are stamped with its number (and
    runs already known take the new entry's fields), so that after a grid is edited the newest
    version of each cell is known (``aggregate`` leaves the older ones out of the table)."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(folder) or {"schema": STUDY_SCHEMA, "grid": grid, "runs": [], "jobs": []}
    manifest["baseline_cell"] = baseline_cell
    runs = [dict(run) for run in runs]
    if runs:
        manifest["expansions"] = expansion = int(manifest.get("expansions", 0)) + 1
        index = {entry["run_id"]: i for i, entry in enumerate(manifest["runs"])}
        for run in runs:
            run["expansion"] = expansion
            if run["run_id"] in index:
                manifest["runs"][index[run["run_id"]]].update(run)
            else:
                manifest["runs"].append(run)
    known = list(manifest.get("jobs", []))
    # a local submission records its job itself as its runs start (``record_job``), then again here
    manifest["jobs"] = known + [entry for entry in (job.to_dict() for job in jobs) if entry not in known]
    write_json_atomic(folder / STUDY_FILE, manifest)


def record_job(folder: Path, job: JobRecord) -> None:
    """Add one job to an existing ``study.json`` (``UserError`` without one). The local executor calls it
    before its first run starts, under the submit's lock: ``launch.submit`` records a job when
    ``submit`` returns, which for runs trained here is after they all ended."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise UserError(f"no {STUDY_FILE} in {folder} to record the job in")
    manifest["jobs"] = list(manifest.get("jobs", [])) + [job.to_dict()]
    write_json_atomic(folder / STUDY_FILE, manifest)


def parse_time(text: Any) -> float | None:
    """An ISO 8601 time (``submitted_at``, ``finished_at``) as POSIX seconds; None when absent or
    unreadable. Without a zone it is UTC (what cifar-hpc writes)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))  # 3.10 does not read "Z"
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


# --- the runs on disk ------------------------------------------------------------------------------


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
    config: dict[str, Any] | None = None
    """Its config as written (the result's, else ``config.json``); None when it never started."""

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

    def find_run(self, run_id: str) -> RecordedRun:
        """A run by id or an unambiguous prefix of it."""
        if run_id in self.runs:
            return self.runs[run_id]
        matches = [r for r in self.runs.values() if r.run_id.startswith(run_id)]
        if len(matches) != 1:
            raise UserError(
                f"run {run_id!r} {'is ambiguous' if matches else 'is not'} in {self.root}"
                + (f" ({', '.join(sorted(m.run_id for m in matches))})" if matches else "")
            )
        return matches[0]


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


def is_run_folder(path: Path) -> bool:
    return path.is_dir() and ((path / RESULT_FILE).exists() or (path / CONFIG_FILE).exists())


def check_study_folder(root: Path) -> None:
    """``UserError`` unless ``root`` is an existing folder that is not a single run's."""
    if not root.is_dir():
        raise UserError(f"{root} is not a folder" if root.exists() else f"{root} does not exist")
    if (root / RESULT_FILE).exists():
        raise UserError(f"{root} is a single run's folder; point at the study folder that holds it ({root.parent})")


def find_studies(path: str | Path) -> list[Path]:
    """``path`` itself when it is a study, else its sub-folders holding a ``study.json`` (``runs/``)."""
    path = Path(path)
    check_study_folder(path)
    if (path / STUDY_FILE).exists():
        return [path]
    studies = sorted(p for p in path.iterdir() if p.is_dir() and (p / STUDY_FILE).exists())
    if studies:
        return studies
    if any(is_run_folder(p) for p in path.iterdir()):
        return [path]
    raise UserError(f"{path} is not a study folder and holds none (no {STUDY_FILE}, no run folders)")


def load_study(root: str | Path, *, baseline: str | None = None, check_mixing: bool = True) -> Study:
    """Read ``study.json`` (if any) and every run folder of a study. Refuses (``UserError``) a folder
    that is not a study and, unless ``check_mixing`` is off (``status`` only counts), runs of two
    grids or generated mixed with real data."""
    root = Path(root)
    check_study_folder(root)
    manifest = read_manifest(root)
    if manifest is None:
        studies = sorted(p for p in root.iterdir() if p.is_dir() and (p / STUDY_FILE).exists())
        if studies:
            what = "a study in a folder below it" if len(studies) == 1 else f"{len(studies)} studies"
            raise UserError(
                f"{root} holds {what}, not one itself: "
                + ", ".join(str(p) for p in studies)
                + f"; name {'it' if len(studies) == 1 else 'one of them'} (runs of different studies are never seeds of one row)"
            )
    warnings: list[str] = []
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
        )
    for entry in (manifest or {}).get("jobs", []):
        job = JobRecord.from_dict(entry)
        packs = Counter(job.task_ids)
        for i, run_id in enumerate(job.run_ids):
            if run_id not in runs:
                continue
            run = runs[run_id]  # later submissions replace earlier ones, Slurm's and local alike
            if job.job_id is not None:
                pack = packs[job.task_ids[i]] if i < len(job.task_ids) else 1
                run.slurm, run.local = SlurmTask(job.slurm_id(i), job.log(i), parse_time(job.submitted_at), pack), None
            elif job.executor == "local":
                process = ProcessRef(job.host, int(job.pid), job.process_start) if job.host and job.pid else None
                log = str(root.resolve() / run_id / LOCAL_LOG)
                run.slurm, run.local = None, LocalTask(process, parse_time(job.submitted_at), log)

    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "logs"))):
        if folder.name not in runs and not is_run_folder(folder):
            continue
        run = runs.setdefault(folder.name, RecordedRun(run_id=folder.name, model=None, cell=None, seed=None))
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
        if run.result and run.result.get("run_id") not in (None, run.run_id):
            warnings.append(f"{folder.name}/{RESULT_FILE} names run {run.result['run_id']}: taken as {folder.name}")
        if run.result and run.result.get("schema", SCHEMA_VERSION) > SCHEMA_VERSION:
            warnings.append(
                f"{folder.name}/{RESULT_FILE} has schema {run.result['schema']} (newer than this cifar-hpc)"
            )

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
