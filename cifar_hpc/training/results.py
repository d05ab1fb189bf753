"""``result.json``: the contract between a training run and everything that reads it.

Written by global rank 0 when a run completes or fails (not when a signal stops it: then Slurm's
state says why, and the next attempt resumes), atomically (a temp file in the same folder, then
``os.replace``), so a reader never sees half a file. Fields (``SCHEMA_VERSION`` 1):

``run_id``, ``status`` (``completed``/``failed``), ``error`` (null or the reason), ``config`` (the
full TrainConfig), ``data`` (``cifar10`` or ``generated``), ``test_acc``, ``test_images`` (the test
set's size: ``test_acc`` is a count of them), ``best_val_acc``,
``test_weights`` (``best``: the best-val checkpoint; ``swa``: the averaged weights), ``epochs_run``,
``stopped_epoch`` (early stop, else null), ``wall_s``, ``gpu_hours``, ``train_s`` and
``train_images_per_s`` (sums over every attempt: ``attempts``, one entry per attempt with its
start, end, host, Slurm job, reason and cost, see ``cifar_hpc.training.attempts``), ``data_fingerprint``,
``wandb_warning`` (why W&B fell back to offline, else null),
``gpu_util_mean``/``gpu_util_p95``/``gpu_mem_peak_mib`` (null when unknown), ``lr_found`` (null
when unused), ``lr_find_warning`` (why the LR finder's pick is a rough guess, else null), ``tricks`` (names switched on), ``resolutions`` (clash choices that applied),
``lightning`` (what Lightning did: accumulation per epoch, clip value, SWA applied and its LR ``swa_lr``, checkpoints),
``world_size``, ``hosts``, ``versions``, ``code`` (the code version the run's process imported,
``cifar_hpc.base.code_identity``), ``container`` (the runtime and image it ran in),
``started_at``/``finished_at`` (UTC ISO 8601).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from cifar_hpc.base.errors import UserError

SCHEMA_VERSION = 1
RESULT_FILE = "result.json"
CONFIG_FILE = "config.json"
"""The settings that made a run, with its ``run_id`` (``cifar_hpc.training.run_folder.write_config``)."""
METRICS_LOG = "logs/metrics.csv"
"""A run's per-epoch metrics, relative to its folder (``cifar_hpc.training.metrics_log`` writes it through
Lightning; named here too so that readers, the report's learning curves, need not import Lightning)."""
PROGRESS_FILE = "progress.json"
"""Written after every epoch by ``cifar_hpc.training.progress``; read by ``status --runs`` (``cifar_hpc.report.run_rows``)."""


def check_writable(folder: Path, what: str = "output dir") -> Path:
    """Fail early (``UserError``), leaving nothing behind, when ``folder`` cannot be created or
    written. Returns the nearest folder that exists: the one whose permissions decide.

    Permission bits do not tell (root passes them everywhere, ``/proc`` included): that folder is
    also asked to take an empty temporary folder, removed at once."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{what} {folder}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{what} {folder} is not writable ({probe} refuses writes)")
    try:
        os.rmdir(tempfile.mkdtemp(dir=probe, prefix=".cifar-hpc-probe-"))
    except OSError as error:
        raise UserError(f"{what} {folder} is not writable ({probe} refuses new entries: {error.strerror})") from None
    return probe


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON so that ``path`` holds either the old content or the complete new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_result(out_dir: Path, result: dict[str, Any]) -> Path:
    path = out_dir / RESULT_FILE
    write_json_atomic(path, {"schema": SCHEMA_VERSION, **result})
    return path


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool): what a metric in result.json must be to be counted."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def result_problem(result: Any) -> str | None:
    """Why this parsed ``result.json`` cannot be used, or None when it can. The one validity rule:
    ``collect`` reports such a result as corrupt, ``submit`` retrains its run, and training does not
    take it for finished (``usable_completed``)."""
    if not isinstance(result, dict):
        return "not a JSON object"
    if result.get("status") not in ("completed", "failed"):
        return f"unknown status {result.get('status')!r}"
    config = result.get("config")
    seed = config.get("seed") if isinstance(config, dict) else None
    if (
        not isinstance(config, dict)
        or not isinstance(config.get("model"), str)
        or not (isinstance(seed, int) and not isinstance(seed, bool))
    ):
        return "no config.model / config.seed"
    if result["status"] == "completed" and not is_number(result.get("test_acc")):
        return "completed without a numeric test_acc"
    return None


def usable_completed(result: Any, run_id: str | None = None) -> bool:
    """``result`` (a parsed result.json, or None) says its run completed, with everything a completed
    run must have, and (when ``run_id`` is given) it is that run's: what lets training skip a run."""
    return (
        isinstance(result, dict)
        and result.get("status") == "completed"
        and result_problem(result) is None
        and (run_id is None or result.get("run_id") == run_id)
    )


def read_result(out_dir: Path) -> dict[str, Any] | None:
    """The run's result, or None when there is none yet or it cannot be read."""
    try:
        return json.loads((out_dir / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None
