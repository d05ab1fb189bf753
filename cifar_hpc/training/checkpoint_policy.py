"""When a run's checkpoints are written: by time, at the end, on Ctrl-C; the best kept in memory.

A ResNet-18 epoch on a modern GPU takes under a second; a checkpoint (89 MB, fsynced) takes longer.
Lightning's usual pair (the best by ``val_acc`` and ``last.ckpt`` every epoch) wrote up to two per
epoch: 1.2-1.3 s of checkpoints and validation for 0.8 s of training, measured on an H200. So:

* ``BestInMemory`` is the recipe's ``ModelCheckpoint(monitor="val_acc", mode="max")``; when it would
  save, it copies the training state on its device instead (a few ms for 90 MB on a GPU, no write)
  and ``flush`` writes the newest copy, removing the one it replaces once it is written;
* ``TimedLastCheckpoint`` writes ``last.ckpt`` (flushing the best first) at an epoch's end once
  ``checkpoint_every_s`` have passed since the last write (rank 0's clock decides, one broadcast per
  epoch), always at the end of fit, and at the next step boundary after Ctrl-C or Slurm's requeue
  signal (not in the signal handler: the state is then a whole number of steps, which a resume
  continues exactly). After the requeue signal's save, the requeue's owner acts: submitit's handler
  (``cifar-hpc submit``: it requeues the task and exits), else this job requeues itself
  (``scontrol requeue``: a plain ``sbatch slurm/train.sbatch``; Lightning's own auto-requeue is off,
  since it saves an extra checkpoint inside the handler). Under DDP the ranks act together at the
  epoch's end (rank 0's flags, in the same broadcast): a step boundary would need a collective per step.

A preempted or timed-out run loses nothing but the step in flight; one killed outright (a lost node,
an OOM kill) at most about max(1 epoch, ``checkpoint_every_s``); a resumed run repeats that span
exactly (``training.batches``).
Both files are written by ``checkpoints.AtomicCheckpointIO`` (complete, or the previous one kept).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.apply_func import apply_to_collection
from lightning.pytorch.callbacks import ModelCheckpoint

from cifar_hpc.base import signals
from cifar_hpc.cluster import slurm
from cifar_hpc.training.checkpoints import BEST_PREFIX, LAST_NAME

log = logging.getLogger(__name__)


def _copy_on_device(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's tensors copied where they are (a device copy, no read back): training goes on
    changing the originals."""
    return apply_to_collection(checkpoint, torch.Tensor, lambda tensor: tensor.detach().clone())


class BestInMemory(ModelCheckpoint):
    """The best ``val_acc`` checkpoint, kept in memory until ``flush`` (see the module docstring)."""

    def __init__(self, dirpath: Path) -> None:
        super().__init__(
            dirpath=dirpath,
            monitor="val_acc",
            mode="max",
            filename=BEST_PREFIX + "{epoch:03d}-{val_acc:.4f}",
            auto_insert_metric_name=False,
        )
        self._pending: tuple[str, dict[str, Any]] | None = None
        self._replaced: list[str] = []

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        # what ModelCheckpoint would write (trainer.save_checkpoint dumps the same), kept instead;
        # only global rank 0 writes, so only it keeps a copy
        if trainer.is_global_zero:
            self._pending = (filepath, _copy_on_device(trainer._checkpoint_connector.dump_checkpoint(False)))
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath

    def _remove_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        self._replaced.append(filepath)  # once its successor is on disk

    def flush(self, trainer: pl.Trainer) -> None:
        """Write the newest best checkpoint (if one is waiting), then remove those it replaced."""
        if self._pending is not None:
            filepath, checkpoint = self._pending
            trainer.strategy.save_checkpoint(checkpoint, filepath)
            self._pending = None
        else:
            filepath = None
        for old in self._replaced:
            if old != filepath and old != self.best_model_path:
                super()._remove_checkpoint(trainer, old)
        self._replaced = []


class TimedLastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` by time, at the end of fit and at the step after Ctrl-C (see the module docstring)."""

    def __init__(self, dirpath: Path, *, every_s: float, best: BestInMemory) -> None:
        super().__init__(dirpath=dirpath, filename=LAST_NAME, monitor=None, save_top_k=1, enable_version_counter=False)
        self.every_s = every_s
        self.best = best
        self.writes = 0
        """``last.ckpt`` writes in this process (a benchmark's and a test's count)."""
        self._written_at = time.monotonic()
        self._ctrl_c = False
        self._requeue = False
        self._previous_sigint: Any = None
        self._previous_requeue: Any = None

    # --- when ---------------------------------------------------------------------------------------
    def _save_topk_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        # ModelCheckpoint asks at every epoch's end (train or validation end, as it decides); rank 0
        # decides for all, in one broadcast per epoch
        due = time.monotonic() - self._written_at >= self.every_s
        due, requeue = trainer.strategy.broadcast((due, self._requeue))
        if due or requeue:
            self.save_now(trainer, monitor_candidates)
        if requeue:
            self._hand_over_requeue(trainer)

    def save_now(self, trainer: pl.Trainer, monitor_candidates: dict[str, torch.Tensor] | None = None) -> None:
        """The best (if waiting), then ``last.ckpt``: now, whatever the clock says."""
        self.best.flush(trainer)
        if self._last_global_step_saved == trainer.global_step and self._last_checkpoint_saved:
            return  # this very state is on disk already
        candidates = monitor_candidates if monitor_candidates is not None else self._monitor_candidates(trainer)
        super()._save_topk_checkpoint(trainer, candidates)
        self._written_at = time.monotonic()
        self.writes += 1

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_handlers()
        self.save_now(trainer)

    # --- Ctrl-C and the requeue signal: noted by the handler, acted on at the next step boundary -----
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._written_at = time.monotonic()
        if threading.current_thread() is not threading.main_thread():
            return  # handlers belong to the main thread
        # Ctrl-C: one process only (under DDP the ranks would have to agree on the step every step)
        if trainer.world_size == 1 and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)
        # the requeue signal: whoever owns it (submitit), or this job itself in Slurm; not in a process
        # whose parent owns it (it ignores the signal: training.pack.run_shared)
        owner = signal.getsignal(signals.REQUEUE_SIGNAL)
        if os.environ.get(signals.REQUEUE_BY_PARENT) != "1" and (callable(owner) or slurm.this_job()):
            self._previous_requeue = signal.signal(signals.REQUEUE_SIGNAL, self._on_requeue_signal)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._ctrl_c:  # a second Ctrl-C: stop now
            self._restore_handlers()
            raise KeyboardInterrupt
        self._ctrl_c = True
        log.warning("Ctrl-C: saving the run at the end of this step (again to stop at once)")

    def _on_requeue_signal(self, signum: int, frame: Any) -> None:
        self._requeue = True
        log.warning("requeue signal (%s): saving the run at the end of this step, then requeueing", signum)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self._ctrl_c:
            self.save_now(trainer)
            self._restore_handlers()
            raise KeyboardInterrupt  # Lightning's graceful stop: trainer.interrupted
        if self._requeue and trainer.world_size == 1:  # under DDP: at the epoch's end, all ranks together
            self.save_now(trainer)
            self._hand_over_requeue(trainer)

    def _hand_over_requeue(self, trainer: pl.Trainer) -> None:
        """The run is saved: let the requeue's owner requeue (submitit's handler also exits the
        process), or requeue this job and exit as submitit does (``SystemExit(-1)``)."""
        owner = self._previous_requeue
        self._restore_handlers()
        if callable(owner):
            owner(signals.REQUEUE_SIGNAL, None)
            return  # submitit returns on ranks other than 0: they wait for the job's end
        job = slurm.this_job()
        if job is not None and trainer.is_global_zero:
            slurm.requeue(job)
            log.info("requeued Slurm job %s; it resumes from %s", job, self.last_model_path or self.dirpath)
        raise SystemExit(-1)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()

    def _restore_handlers(self) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None
        if self._previous_requeue is not None:
            signal.signal(signals.REQUEUE_SIGNAL, self._previous_requeue)
            self._previous_requeue = None
