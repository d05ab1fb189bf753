"""``study.json``: one reader, one writer, one job record per submission.

``cifar-hpc submit`` writes it through ``record_submission``, under ``launch.study_lock``: the grid
(its ``description``: the study's question), ``baseline_cell``, every expected run with its
cell/model/seed, one ``JobRecord`` per submission, and ``code``: the code version the latest
submission submitted (``cifar_hpc.base.code_identity.current``), which each job records too
(``cifar_hpc.study.code_version`` compares it with what each run trained).
``cifar_hpc.study.recorded`` reads it together with the study's run folders.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cifar_hpc.base import code_identity
from cifar_hpc.base.errors import UserError
from cifar_hpc.training.results import write_json_atomic

STUDY_FILE = "study.json"
STUDY_SCHEMA = 1
DEFAULT_BASELINE = "baseline"


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
    code: dict[str, Any] | None = None
    """The code version it submitted (``code_identity.current``); ``record_submission`` fills it in."""

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
            code=entry.get("code") if isinstance(entry.get("code"), dict) else None,
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
    folder: Path,
    *,
    grid: str,
    baseline_cell: str,
    runs: Iterable[Mapping[str, Any]],
    jobs: Sequence[JobRecord],
    description: str | None = None,
    as_defined: bool = True,
) -> None:
    """Merge the expected runs (``run_id``, ``cell``, ``model``, ``seed``, ``out_dir``) and new jobs
    into ``study.json``, atomically. The caller holds ``launch.study_lock(folder)`` (taking it here
    again would deadlock): the record is made under the same lock as the decision to submit.

    Each call with runs is one *expansion* of the grid: its runs are stamped with its number (and
    runs already known take the new entry's fields), so that after a grid is edited the newest
    version of each cell is known. ``as_defined``: the runs are the grid as its file defines them (no
    ``--set``): they are stamped ``grid_defined`` with the expansion too, which a later ``--set``
    submission (a quick check into the study's folder) never takes from them, so that ``collect``
    shows each cell as the grid defines it (``cifar_hpc.report.versions``). It also
    records the code as it is now (``code``), just before the first job is submitted; each job
    recorded after it carries that code."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(folder) or {"schema": STUDY_SCHEMA, "grid": grid, "runs": [], "jobs": []}
    manifest["baseline_cell"] = baseline_cell
    if description:
        manifest["description"] = description
    runs = [dict(run) for run in runs]
    if runs:
        manifest["code"] = code_identity.current()
        manifest["expansions"] = expansion = int(manifest.get("expansions", 0)) + 1
        index = {entry["run_id"]: i for i, entry in enumerate(manifest["runs"])}
        for run in runs:
            run["expansion"] = expansion
            if as_defined:
                run["grid_defined"] = expansion
            if run["run_id"] in index:
                manifest["runs"][index[run["run_id"]]].update(run)
            else:
                manifest["runs"].append(run)
    known = list(manifest.get("jobs", []))
    # a local submission records its job itself as its runs start (``record_job``), then again here
    new = (_with_code(job, manifest) for job in jobs)
    manifest["jobs"] = known + [entry for entry in new if entry not in known]
    write_json_atomic(folder / STUDY_FILE, manifest)


def _with_code(job: JobRecord, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The job's entry, with the code of the submission it belongs to (the study's latest)."""
    entry = job.to_dict()
    if entry.get("code") is None:
        entry["code"] = manifest.get("code")
    return entry


def record_job(folder: Path, job: JobRecord) -> None:
    """Add one job to an existing ``study.json`` (``UserError`` without one). The local executor calls it
    before its first run starts, under the submit's lock: ``launch.submit`` records a job when
    ``submit`` returns, which for runs trained here is after they all ended."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise UserError(f"no {STUDY_FILE} in {folder} to record the job in")
    manifest["jobs"] = list(manifest.get("jobs", [])) + [_with_code(job, manifest)]
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
