"""An attempt that fit or test did not finish: stopped from outside, or broken.

Stopped by a signal (Ctrl-C, SIGTERM, submitit's requeue exit): no result, since Slurm's state says
why (cancelled, preempted, requeued, time limit) and the next attempt resumes; Ctrl-C and SIGTERM are
raised as ``Interrupted`` and ``Terminated``. Broken (a bug, a full disk, a broken node): a failed
``result.json`` says so, then the error goes on up.

After Ctrl-C the W&B run is finished here, as a completed run's is: left to W&B's exit hook, it
prints its footer ("You can sync this run ...") in colour to stdout, a terminal or not, whatever
W&B's quiet settings say (W&B 0.31).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from cifar_hpc.base import signals
from cifar_hpc.base.errors import Interrupted, Terminated
from cifar_hpc.cluster.profiles import TIMED_OUT_TOO_OFTEN, out_of_time_note
from cifar_hpc.config.train_config import TrainConfig
from cifar_hpc.training.attempts import AttemptLog, reason_for, stop_kind
from cifar_hpc.training.checkpoints import CHECKPOINT_DIR, LAST_CKPT
from cifar_hpc.training.provenance import requeues
from cifar_hpc.training.results import RESULT_FILE, write_result
from cifar_hpc.training.run_loggers import close_loggers
from cifar_hpc.training.timing import RunClock

log = logging.getLogger(__name__)


def end_unfinished(
    error: BaseException,
    *,
    cfg: TrainConfig,
    out_dir: Path,
    trainer: pl.Trainer,
    clock: RunClock,
    attempts: AttemptLog,
    result: dict[str, Any],
) -> None:
    """End the attempt ``error`` cut short: raise ``Interrupted`` or ``Terminated`` when stopped from
    outside; else write the failed result (on global rank 0) and return, for the caller to re-raise.
    ``result`` holds what the result has so far. A ConnectionResetError from W&B, whose service the
    same SIGTERM killed first, is the signal's doing, not the run's."""
    cause = clock.stopped_by or error
    stopped = _stopped(cause, trainer)
    attempts.current.timing = clock.block()
    attempts.end(reason_for(cause, stopped))
    if stopped is None and trainer.is_global_zero:
        failed = {**result, "status": "failed", "error": _error_text(cause, attempts), "config": cfg.to_dict()}
        _write_failure(
            out_dir, {**failed, "requeues": requeues(), "finished_at": attempts.current.ended_at, **attempts.totals()}
        )
    last = out_dir / CHECKPOINT_DIR / LAST_CKPT
    if stopped == "interrupted":
        try:
            close_loggers(trainer, exit_code=1)  # W&B: a run that failed, until its next attempt resumes it
        except Exception as problem:  # noqa: BLE001 - W&B must not hide how the run stopped
            log.warning("run %s: W&B not finished after Ctrl-C: %s", cfg.run_id, problem)
        at = f"by Ctrl-C in epoch {min(trainer.current_epoch + 1, cfg.epochs)}/{cfg.epochs} at step {trainer.global_step}"
        raise Interrupted(
            f"interrupted {at}; run the same command again to resume {cfg.run_id} from {last}"
            if last.exists()
            else f"interrupted {at}, before the first checkpoint; run the same command again to start {cfg.run_id}"
        ) from None
    if stopped == "terminated" and isinstance(cause, Exception):
        # e.g. W&B's service, killed by the same SIGTERM: the job is going away, not the run failing
        raise Terminated(f"run {cfg.run_id} stopped by SIGTERM ({type(cause).__name__}: {cause})") from cause


def _stopped(cause: BaseException, trainer: pl.Trainer) -> str | None:
    """``attempts.stop_kind`` of what ended the fit: stopped from outside, or None (the run failed)."""
    if isinstance(cause, ConnectionError) and not (trainer.received_sigterm or signals.received()):
        time.sleep(1.0)  # W&B's service may have died of the SIGTERM a moment before ours arrives
    # Lightning notices a SIGTERM inside fit and test only; signals.received() wherever it struck
    return stop_kind(cause, sigterm=trainer.received_sigterm or signals.received())


def _error_text(cause: BaseException, attempts: AttemptLog) -> str:
    """The reason a failed result gives; submitit's "timed-out too many times" says what to raise."""
    text = f"{type(cause).__name__}: {cause}"
    if TIMED_OUT_TOO_OFTEN in text:
        return out_of_time_note(len(attempts.all))
    return text


def _write_failure(out_dir: Path, result: dict[str, Any]) -> None:
    """The failed result, or one clear line when even that cannot be written (a full disk)."""
    try:
        write_result(out_dir, result)
    except OSError as again:
        log.error(
            "%s; %s could not be written either (%s)", result["error"], out_dir / RESULT_FILE, again.strerror or again
        )
