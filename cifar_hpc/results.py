"""``result.json``: the contract between a training run and everything that reads it.

Written by global rank 0 when a run completes or fails (not when a signal stops it: then Slurm's
state says why, and the next attempt resumes), atomically (a temp file in the same folder, then
``os.replace``), so a reader never sees half a file. Fields (``SCHEMA_VERSION`` 1):

``run_id``, ``status`` (``completed``/``failed``), ``error`` (null or the reason), ``config`` (the
full TrainConfig), ``data`` (``cifar10`` or ``generated``), ``test_acc``, ``best_val_acc``,
``test_weights`` (``best``: the best-val checkpoint; ``swa``: the averaged weights), ``epochs_run``,
``stopped_epoch`` (early stop, else null), ``wall_s``, ``gpu_hours``, ``train_s`` and
``train_images_per_s`` (sums over every attempt: ``attempts``, one entry per attempt with its
start, end, host, Slurm job, reason and cost, see ``cifar_hpc.attempts``), ``data_fingerprint``,
``wandb_warning`` (why W&B fell back to offline, else null),
``gpu_util_mean``/``gpu_util_p95``/``gpu_mem_peak_mib`` (null when unknown), ``lr_found`` (null
when unused), ``tricks`` (names switched on), ``resolutions`` (clash choices that applied),
``lightning`` (what Lightning did: accumulation per epoch, clip value, SWA applied, checkpoints),
``world_size``, ``hosts``, ``versions``, ``started_at``/``finished_at`` (UTC ISO 8601).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from cifar_hpc.errors import UserError

SCHEMA_VERSION = 1
RESULT_FILE = "result.json"


def check_writable(folder: Path, what: str = "output dir") -> Path:
    """Fail early (``UserError``), without creating anything, when ``folder`` cannot be created or
    written. Returns the nearest folder that exists: the one whose permissions decide."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{what} {folder}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{what} {folder} is not writable ({probe} refuses writes)")
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


def read_result(out_dir: Path) -> dict[str, Any] | None:
    """The run's result, or None when there is none yet or it cannot be read."""
    try:
        return json.loads((out_dir / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None
