"""The Lightning callbacks of a run, built from its tricks in the order the clash resolutions in
``cifar_hpc.training.tricks`` rely on."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    GradientAccumulationScheduler,
    LearningRateFinder,
    LearningRateMonitor,
    StochasticWeightAveraging,
)
from lightning.pytorch.utilities import rank_zero_only

from cifar_hpc.config.train_config import TrainConfig
from cifar_hpc.training.checkpoint_policy import BestInMemory, TimedLastCheckpoint
from cifar_hpc.training.checkpoints import CHECKPOINT_DIR
from cifar_hpc.training.tricks import effective, swa_lr

log = logging.getLogger(__name__)

LR_FIND_FILE = "lr_find.json"
LR_FIND_PNG = "lr_find.png"

TRUSTED_SWEEP_STEPS = 100
"""Fewest sweep steps whose pick the LR finder trusts: Lightning's own default (``num_training_steps=100``).
The sweep spans 1e-8..1 (8 decades) exponentially, and the steepest-descent pick drops its first 10
points and last one, then takes the steepest finite difference: 100 steps give 12.5 points per decade
(neighbours 20% apart in LR); the 18 steps of a tiny run give 2 points per decade and 7 candidates,
so the "steepest" point is mostly where the sweep happened to sample."""


def sweep_warning(steps: int, lr_found: float | None) -> str | None:
    """The one line said (and recorded) when a sweep of ``steps`` steps is too short to trust, else None."""
    if steps >= TRUSTED_SWEEP_STEPS:
        return None
    pick = f"its pick lr={lr_found:.3g}" if lr_found is not None else "its pick"
    return (
        f"LR finder swept only {steps} steps (Lightning's default is {TRUSTED_SWEEP_STEPS}; the pick skips the "
        f"first 10): {pick} is a rough guess; give it at least {TRUSTED_SWEEP_STEPS} training batches "
        "(more data, a smaller batch or more epochs) or set --lr yourself"
    )


class LrFinderThenReschedule(LearningRateFinder):
    """Lightning's LR finder, then optimizers rebuilt around its pick, and the curve recorded.

    Under DDP every rank takes part in the sweep (gradients are all-reduced, so the curve is that
    of the global batch the run trains with); Lightning broadcasts rank 0's curve, so every rank
    computes the same steepest-descent pick.
    """

    def __init__(self, out_dir: Path, *, num_training_steps: int = TRUSTED_SWEEP_STEPS, **kwargs: Any) -> None:
        super().__init__(update_attr=True, attr_name="lr", num_training_steps=num_training_steps, **kwargs)
        self.out_dir = out_dir
        self.sweep_steps = num_training_steps
        self.lr_found: float | None = None
        self.warning: str | None = None
        """``sweep_warning`` of the sweep this run's LR came from (also in ``lr_find.json`` and ``result.json``)."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        previous = self.out_dir / LR_FIND_FILE
        if previous.exists():  # a resumed run keeps its first pick; the checkpoint holds the optimizer state
            record = json.loads(previous.read_text())
            self.lr_found, self.warning = record["lr_found"], record.get("warning")
            pl_module.lr = self.lr_found
            return
        super().on_fit_start(trainer, pl_module)
        suggested = None
        if self.optimal_lr is not None:
            # Lightning asked inside lr_find and said why if it failed; asking again would say it again
            finder_log = logging.getLogger("lightning.pytorch.tuner.lr_finder")
            finder_log.disabled = True
            try:
                suggested = self.optimal_lr.suggestion()
            finally:
                finder_log.disabled = False
        if suggested is None:
            self.warning = sweep_warning(self.sweep_steps, None)
            log.warning("LR finder found no steepest-descent point; keeping lr=%s", pl_module.lr)
            return
        self.lr_found = float(suggested)
        self.warning = sweep_warning(self.sweep_steps, self.lr_found)
        if self.warning and trainer.is_global_zero:
            log.warning("%s", self.warning)
        pl_module.lr = self.lr_found
        trainer.strategy.setup_optimizers(trainer)  # schedule built again around the found LR
        self._record(trainer)

    @rank_zero_only
    def _record(self, trainer: pl.Trainer) -> None:
        finder = self.optimal_lr
        record = {
            "lr_found": self.lr_found,
            "lr": list(map(float, finder.results["lr"])),
            "loss": list(map(float, finder.results["loss"])),
            "pick": "steepest descent of the loss",
            "sweep_steps": self.sweep_steps,
            "warning": self.warning,
        }
        (self.out_dir / LR_FIND_FILE).write_text(json.dumps(record))
        figure = finder.plot(suggest=True, show=False)  # the curve, and Lightning's red dot at its pick
        title = _mark_pick(figure.axes[0], self.lr_found, self.sweep_steps, trusted=self.warning is None)
        # the title also goes into the PNG's text metadata: what the picture says can be read without seeing it
        figure.savefig(self.out_dir / LR_FIND_PNG, dpi=100, bbox_inches="tight", metadata={"Title": title})
        import matplotlib.pyplot as plt

        plt.close(figure)
        if trainer.logger is not None:
            trainer.logger.log_metrics({"lr_found": self.lr_found}, step=0)


def _mark_pick(ax: Any, lr: float, steps: int, *, trusted: bool) -> str:
    """Give the plot a title and the chosen LR as a labelled vertical line; returns the title (one line)."""
    ax.axvline(lr, color="red", linestyle="--", linewidth=1, label=f"chosen lr = {lr:.3g} (steepest descent)")
    ax.legend(loc="best")
    caveat = "" if trusted else f", under {TRUSTED_SWEEP_STEPS}: a rough guess"
    title = f"LR finder: chosen lr = {lr:.3g} ({steps}-step sweep{caveat})"
    ax.set_title(title)
    return title


class SwaAtPeakFraction(StochasticWeightAveraging):
    """Lightning's SWA at ``tricks.swa_lr(cfg, peak)``: a fraction of the peak LR the run trains
    with, known at fit start (the LR finder, earlier in the callbacks, has set ``module.lr`` by then;
    a resumed run reads its first pick back). Lightning reads ``_swa_lrs`` only when SWA starts
    (``on_train_epoch_start``), so setting it at fit start is in time (tests/test_library_internals.py)."""

    def __init__(self, cfg: TrainConfig, **kwargs: Any) -> None:
        super().__init__(swa_lrs=swa_lr(cfg), swa_epoch_start=cfg.tricks.swa_epoch_start, **kwargs)
        self.cfg = cfg
        self.swa_lr = swa_lr(cfg)
        """The LR SWA anneals to (result.json's ``lightning.swa_lr``)."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        self.swa_lr = swa_lr(self.cfg, getattr(pl_module, "lr", None))
        self._swa_lrs = self.swa_lr


def build_callbacks(cfg: TrainConfig, out_dir: Path, *, lr_finder_steps: int = 100) -> list[Callback]:
    """The callbacks of one run, in the order that the clash resolutions above rely on."""
    cfg = effective(cfg)  # the tricks as trained: a clash's loser (early_stop under SWA) is off
    callbacks: list[Callback] = []
    if cfg.tricks.lr_find:  # first: the sweep must see the plain optimizer, before SWA touches it
        callbacks.append(LrFinderThenReschedule(out_dir, num_training_steps=lr_finder_steps))
    if cfg.tricks.accumulate:  # before SWA: SWA's BatchNorm epoch sets its own accumulation
        callbacks.append(GradientAccumulationScheduler(scheduling=cfg.tricks.accumulation))
    if cfg.tricks.swa:
        callbacks.append(SwaAtPeakFraction(cfg, annealing_epochs=1))
    if cfg.tricks.early_stop:
        callbacks.append(EarlyStopping(monitor="val_acc", mode="max", patience=cfg.tricks.early_stop_patience))
    # Checkpoints: the best by val_acc kept in memory, written with last.ckpt by time and at the end
    # (cifar_hpc.training.checkpoint_policy); each file written atomically by checkpoints.AtomicCheckpointIO,
    # and found again by resume_checkpoint by these names. The best copies the state before last writes.
    best = BestInMemory(out_dir / CHECKPOINT_DIR)
    callbacks += [best, TimedLastCheckpoint(out_dir / CHECKPOINT_DIR, every_s=cfg.checkpoint_every_s, best=best)]
    callbacks.append(LearningRateMonitor(logging_interval="step"))
    return callbacks
