"""A run's progress, epoch by epoch: ``<run folder>/progress.json`` and one log line per epoch, e.g.::

    epoch 3/10 run 1a2b3c4d5e6f: train_loss 1.234 train_acc 56.7% val_acc 55.1% lr 0.0123 img/s 1234 elapsed 0:01:23

The line reaches the run's log (``train.log``, a Slurm job's log) always; the console too, unless a
terminal shows Lightning's progress bar (``console.progress_bar``), which says the same.

``progress.json`` (written atomically by global rank 0 after each epoch; ``cifar-hpc status --runs``
reads it): ``run_id``, ``epoch`` (epochs completed), ``epochs`` (planned), ``train_loss`` (the
epoch's mean), ``train_acc``, ``val_acc`` (fractions), ``best_val_acc`` (the best so far, over every
attempt of the run: kept in its checkpoints), ``lr`` (at the epoch's end), ``img_per_s`` (training
images, every rank, per second of the epoch's training, validation excluded), ``elapsed_s`` (since
this attempt started), ``updated_at`` (UTC ISO 8601).

SWA's extra epoch (Lightning refreshes BatchNorm's statistics for the averaged weights after the last
one) trains nothing: it is reported as the last epoch again, marked ``swa``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, TQDMProgressBar

from cifar_hpc.base import console
from cifar_hpc.training.results import PROGRESS_FILE, write_json_atomic

log = logging.getLogger(__name__)


def progress_line(progress: dict[str, Any]) -> str:
    """The one line an epoch prints, from its ``progress.json`` record (null values print as ``-``)."""
    swa = " (SWA batch-norm pass)" if progress.get("swa") else ""
    fields = [
        ("train_loss", _number(progress["train_loss"], ".3f")),
        ("train_acc", _percent(progress["train_acc"])),
        ("val_acc", _percent(progress["val_acc"])),
        ("lr", _number(progress["lr"], ".3g")),
        ("img/s", _number(progress["img_per_s"], ".0f")),
        ("elapsed", _duration(progress["elapsed_s"])),
    ]
    text = " ".join(f"{name} {value}" for name, value in fields)
    return f"epoch {progress['epoch']}/{progress['epochs']} run {progress['run_id']}{swa}: {text}"


def log_progress(progress: dict[str, Any], *, bar: bool) -> None:
    """Log the epoch's line (``progress_line``); ``bar``: a progress bar shows the epochs on this
    console, so only the run's log gets it."""
    log.info("%s", progress_line(progress), extra=console.FILE_ONLY if bar else None)


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _duration(seconds: float | None) -> str:
    return "-" if seconds is None else str(dt.timedelta(seconds=round(seconds)))


class EpochProgress(Callback):
    """Writes ``progress.json`` after each epoch and logs ``progress_line`` to
    ``cifar_hpc.training.progress`` (INFO; ``bar``: for the run's log only, a progress bar shows the
    epochs on the console). The training figures are the module's ``train_epoch_stats()`` (read once
    per epoch, every rank together); global rank 0 writes and prints."""

    def __init__(
        self, run_id: str, out_dir: Path, epochs: int, *, bar: bool = False, started: float | None = None
    ) -> None:
        self.run_id = run_id
        self.path = Path(out_dir) / PROGRESS_FILE
        self.epochs = epochs
        self.bar = bar
        self.started = started
        """The attempt's start (``time.time()``); None: when fit starts."""
        self.best_val_acc: float | None = None
        self._train_s = 0.0
        self._segment_start: float | None = None
        self._paused = False

    # --- saved with the run's checkpoints: a resumed run keeps its best -----------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"best_val_acc": self.best_val_acc}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_val_acc = state_dict.get("best_val_acc")

    # --- the epoch's training time and images -------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.started is None:
            self.started = time.time()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._train_s = 0.0
        self._segment_start = time.perf_counter()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning validates inside the training epoch (before on_train_epoch_end): pause its clock
        self._paused = self._segment_start is not None
        self._pause()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        val_acc = _value(trainer.callback_metrics.get("val_acc"))  # every rank: a synced metric
        if val_acc is not None:
            self.best_val_acc = val_acc if self.best_val_acc is None else max(self.best_val_acc, val_acc)
        if self._paused:  # back to the epoch validation interrupted
            self._segment_start = time.perf_counter()
            self._paused = False

    def _pause(self) -> None:
        if self._segment_start is not None:
            self._train_s += time.perf_counter() - self._segment_start
            self._segment_start = None

    # --- the report ---------------------------------------------------------------------------------
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pause()
        metrics = trainer.callback_metrics  # val_acc: computed on every rank, synced across ranks
        stats = pl_module.train_epoch_stats()  # the epoch's one read, over every rank (module.py)
        if not trainer.is_global_zero:
            return
        progress = self.record(
            epoch=trainer.current_epoch + 1,
            train_loss=stats.loss,
            train_acc=stats.acc,
            val_acc=_value(metrics.get("val_acc")),
            lr=trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None,
            img_per_s=stats.images / self._train_s if stats.images and self._train_s > 0 else None,
        )
        try:
            write_json_atomic(self.path, progress)
        except OSError as error:  # a status file: the checkpoint that follows is what a full disk must stop
            log.warning("run %s: %s not written: %s", self.run_id, PROGRESS_FILE, error)
        log_progress(progress, bar=self.bar)

    def record(self, *, epoch: int, **values: float | None) -> dict[str, Any]:
        """``progress.json``'s content after ``epoch`` (counted from 1)."""
        now = time.time()
        return {
            "run_id": self.run_id,
            "epoch": min(epoch, self.epochs),
            "epochs": self.epochs,
            **{key: None if value is None else round(float(value), 6) for key, value in values.items()},
            "best_val_acc": None if self.best_val_acc is None else round(self.best_val_acc, 6),
            "elapsed_s": round(now - self.started, 1) if self.started is not None else None,
            "updated_at": dt.datetime.fromtimestamp(now, dt.timezone.utc).isoformat(timespec="seconds"),
            **({"swa": True} if epoch > self.epochs else {}),
        }


class RunningLossBar(TQDMProgressBar):
    """Lightning's terminal progress bar, its ``train_loss`` the running mean of the epoch so far, taken
    without waiting for the device (``EpochSums.peek``: a few steps old on CUDA). Where no peek is to be
    had (a CPU) it shows the last epoch's, as logged."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        sums = getattr(pl_module, "epoch_sums", None)
        running, _ = sums.peek() if sums is not None and trainer.training else (None, None)
        if running is not None:
            items["train_loss"] = f"{running:.3g}"
        return items


def _value(metric: Any) -> float | None:
    if metric is None:
        return None
    return float(metric.item() if isinstance(metric, torch.Tensor) else metric)
