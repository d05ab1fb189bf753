"""The Lightning callbacks of a run, built from its tricks in the order the clash resolutions in
``cifar_hpc.tricks`` rely on."""

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
    ModelCheckpoint,
    StochasticWeightAveraging,
)
from lightning.pytorch.utilities import rank_zero_only

from cifar_hpc.checkpoints import BEST_PREFIX, CHECKPOINT_DIR, LAST_NAME
from cifar_hpc.config import TrainConfig
from cifar_hpc.tricks import effective

log = logging.getLogger(__name__)

LR_FIND_FILE = "lr_find.json"
LR_FIND_PNG = "lr_find.png"


class LrFinderThenReschedule(LearningRateFinder):
    """Lightning's LR finder, then optimizers rebuilt around its pick, and the curve recorded.

    Under DDP every rank takes part in the sweep (gradients are all-reduced, so the curve is that
    of the global batch the run trains with); Lightning broadcasts rank 0's curve, so every rank
    computes the same steepest-descent pick.
    """

    def __init__(self, out_dir: Path, **kwargs: Any) -> None:
        super().__init__(update_attr=True, attr_name="lr", **kwargs)
        self.out_dir = out_dir
        self.lr_found: float | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        previous = self.out_dir / LR_FIND_FILE
        if previous.exists():  # a resumed run keeps its first pick; the checkpoint holds the optimizer state
            self.lr_found = json.loads(previous.read_text())["lr_found"]
            pl_module.lr = self.lr_found
            return
        super().on_fit_start(trainer, pl_module)
        if self.optimal_lr is None or self.optimal_lr.suggestion() is None:
            log.warning("LR finder found no steepest-descent point; keeping lr=%s", pl_module.lr)
            return
        self.lr_found = float(self.optimal_lr.suggestion())
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
        }
        (self.out_dir / LR_FIND_FILE).write_text(json.dumps(record))
        figure = finder.plot(suggest=True, show=False)
        figure.savefig(self.out_dir / LR_FIND_PNG, dpi=100)
        import matplotlib.pyplot as plt

        plt.close(figure)
        if trainer.logger is not None:
            trainer.logger.log_metrics({"lr_found": self.lr_found}, step=0)


def build_callbacks(cfg: TrainConfig, out_dir: Path, *, lr_finder_steps: int = 100) -> list[Callback]:
    """The callbacks of one run, in the order that the clash resolutions above rely on."""
    cfg = effective(cfg)  # the tricks as trained: a clash's loser (early_stop under SWA) is off
    callbacks: list[Callback] = []
    if cfg.tricks.lr_find:  # first: the sweep must see the plain optimizer, before SWA touches it
        callbacks.append(LrFinderThenReschedule(out_dir, num_training_steps=lr_finder_steps))
    if cfg.tricks.accumulate:  # before SWA: SWA's BatchNorm epoch sets its own accumulation
        callbacks.append(GradientAccumulationScheduler(scheduling=cfg.tricks.accumulation))
    if cfg.tricks.swa:
        callbacks.append(
            StochasticWeightAveraging(
                swa_lrs=cfg.tricks.swa_lrs,
                swa_epoch_start=cfg.tricks.swa_epoch_start,
                annealing_epochs=1,
            )
        )
    if cfg.tricks.early_stop:
        callbacks.append(EarlyStopping(monitor="val_acc", mode="max", patience=cfg.tricks.early_stop_patience))
    # Checkpoints are written atomically by cifar_hpc.checkpoints.AtomicCheckpointIO (a Trainer
    # plugin); resume_checkpoint finds them by these names. The best one is saved before last.ckpt in
    # an epoch (this order), and replaces its predecessor only once it is complete.
    callbacks.append(
        ModelCheckpoint(
            dirpath=out_dir / CHECKPOINT_DIR,
            monitor="val_acc",
            mode="max",
            filename=BEST_PREFIX + "{epoch:03d}-{val_acc:.4f}",
            auto_insert_metric_name=False,
        )
    )
    # `save_last=True` on the monitored callback only refreshes last.ckpt when val_acc improves, so a
    # requeued run would redo every epoch since its last improvement. This one writes it every epoch.
    callbacks.append(
        ModelCheckpoint(
            dirpath=out_dir / CHECKPOINT_DIR,
            filename=LAST_NAME,
            monitor=None,
            save_top_k=1,
            enable_version_counter=False,
        )
    )
    callbacks.append(LearningRateMonitor(logging_interval="step"))
    return callbacks
