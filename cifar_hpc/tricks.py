"""Training tricks as Lightning's own callbacks and Trainer arguments, clashes resolved here.

The known clashes, and what we chose (each choice is recorded in ``result.json`` under
``resolutions`` when it applies to a run):

* **SWA replaces the LR scheduler** from its start epoch (SWALR anneals to ``swa_lrs``). Our main
  schedule is therefore laid out over the epochs *before* SWA starts, so one-cycle/cosine finish
  their shape instead of being cut off mid-way.
* **SWA only applies its averaged weights when training reaches ``max_epochs``**, so an early stop
  would silently throw them away. SWA wins: early stopping is switched off when SWA is on.
* **SWA with the LR finder**: the finder sweeps with SWA out of the way (Lightning swaps all
  callbacks out during the sweep) and its pick sets the peak LR of the main schedule only;
  ``swa_lrs`` stays as configured.
* **The LR finder and our scheduler**: Lightning's finder updates the optimizer's LR but the
  scheduler built in ``configure_optimizers`` keeps the old base LR and would undo the pick on its
  first step. After the sweep the optimizers are rebuilt around the found LR.
* **``GradientAccumulationScheduler`` with ``accumulate_grad_batches``**: Lightning refuses both at
  once. Accumulation is only ever expressed through the scheduler (a constant factor k is {0: k});
  the Trainer's ``accumulate_grad_batches`` is never set.
* **Accumulation with SWA's BatchNorm epoch**: SWA sets the Trainer's accumulation itself in its
  extra epoch, so the accumulation callback is placed before SWA and SWA has the last word.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import (
    Callback, EarlyStopping, GradientAccumulationScheduler, LearningRateFinder, LearningRateMonitor,
    ModelCheckpoint, StochasticWeightAveraging,
)
from lightning.pytorch.utilities import rank_zero_only

from cifar_hpc.config import TrainConfig

log = logging.getLogger(__name__)

TRICKS = ("crop", "flip", "rotate", "lr_find", "swa", "accumulate", "clip", "early_stop")
"""Every trick by name: the first three are augmentations, the rest training tricks."""

# What switching each trick on or off means in config terms. A grid's ablation cells are built
# from these (a grid file may override the "on" settings, e.g. another accumulation schedule).
TRICK_ON: dict[str, dict[str, Any]] = {
    "crop": {"augment": {"crop": True}},
    "flip": {"augment": {"flip": True}},
    "rotate": {"augment": {"rotate": True}},
    "lr_find": {"tricks": {"lr_find": True}},
    "swa": {"tricks": {"swa": True}},
    "accumulate": {"tricks": {"accumulate": "0:1,2:2"}},
    "clip": {"tricks": {"clip": True}},
    "early_stop": {"tricks": {"early_stop": True}},
}
TRICK_OFF: dict[str, dict[str, Any]] = {
    "crop": {"augment": {"crop": False}},
    "flip": {"augment": {"flip": False}},
    "rotate": {"augment": {"rotate": False}},
    "lr_find": {"tricks": {"lr_find": False}},
    "swa": {"tricks": {"swa": False}},
    "accumulate": {"tricks": {"accumulate": ()}},
    "clip": {"tricks": {"clip": False}},
    "early_stop": {"tricks": {"early_stop": False}},
}

LR_FIND_FILE = "lr_find.json"
LR_FIND_PNG = "lr_find.png"


def enabled_tricks(cfg: TrainConfig) -> list[str]:
    """The names of the tricks a config switches on, in TRICKS order."""
    on = {
        "crop": cfg.augment.crop, "flip": cfg.augment.flip, "rotate": cfg.augment.rotate,
        "lr_find": cfg.tricks.lr_find, "swa": cfg.tricks.swa, "accumulate": bool(cfg.tricks.accumulate),
        "clip": cfg.tricks.clip, "early_stop": cfg.tricks.early_stop,
    }
    return [name for name in TRICKS if on[name]]


def resolutions(cfg: TrainConfig) -> list[str]:
    """What this run's trick combination changed, in words, for result.json and the log."""
    notes = []
    if cfg.tricks.swa:
        notes.append(f"swa: main {cfg.optim.schedule} schedule spans the {swa_start_epoch(cfg)} epochs before SWA starts")
        if cfg.tricks.early_stop:
            notes.append("swa+early_stop: early stopping disabled so that SWA's averaged weights are applied")
        if cfg.tricks.lr_find:
            notes.append("swa+lr_find: the found LR sets the main schedule's peak; swa_lrs unchanged")
    return notes


def swa_start_epoch(cfg: TrainConfig) -> int:
    """The epoch SWA starts at (Lightning's float rule: int(max_epochs × fraction))."""
    return int(cfg.epochs * cfg.tricks.swa_epoch_start)


def schedule_epochs(cfg: TrainConfig) -> int:
    """Epochs the main LR schedule spans: all of them, or those before SWA takes over."""
    return max(1, swa_start_epoch(cfg)) if cfg.tricks.swa else cfg.epochs


def trainer_arguments(cfg: TrainConfig) -> dict[str, Any]:
    """Trainer keyword arguments that tricks decide."""
    args: dict[str, Any] = {}
    if cfg.tricks.clip:
        args.update(gradient_clip_val=cfg.tricks.clip_value, gradient_clip_algorithm="norm")
    return args


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
        record = {"lr_found": self.lr_found, "lr": list(map(float, finder.results["lr"])),
                  "loss": list(map(float, finder.results["loss"])), "pick": "steepest descent of the loss"}
        (self.out_dir / LR_FIND_FILE).write_text(json.dumps(record))
        figure = finder.plot(suggest=True, show=False)
        figure.savefig(self.out_dir / LR_FIND_PNG, dpi=100)
        import matplotlib.pyplot as plt
        plt.close(figure)
        if trainer.logger is not None:
            trainer.logger.log_metrics({"lr_found": self.lr_found}, step=0)


def build_callbacks(cfg: TrainConfig, out_dir: Path, *, lr_finder_steps: int = 100) -> list[Callback]:
    """The callbacks of one run, in the order that the clash resolutions above rely on."""
    callbacks: list[Callback] = []
    if cfg.tricks.lr_find:  # first: the sweep must see the plain optimizer, before SWA touches it
        callbacks.append(LrFinderThenReschedule(out_dir, num_training_steps=lr_finder_steps))
    if cfg.tricks.accumulate:  # before SWA: SWA's BatchNorm epoch sets its own accumulation
        callbacks.append(GradientAccumulationScheduler(scheduling=cfg.tricks.accumulation))
    if cfg.tricks.swa:
        callbacks.append(StochasticWeightAveraging(
            swa_lrs=cfg.tricks.swa_lrs, swa_epoch_start=cfg.tricks.swa_epoch_start, annealing_epochs=1,
        ))
    if cfg.tricks.early_stop and not cfg.tricks.swa:
        callbacks.append(EarlyStopping(monitor="val_acc", mode="max", patience=cfg.tricks.early_stop_patience))
    callbacks.append(ModelCheckpoint(
        dirpath=out_dir / "checkpoints", monitor="val_acc", mode="max",
        filename="best-{epoch:03d}-{val_acc:.4f}", auto_insert_metric_name=False,
    ))
    # `save_last=True` on the monitored callback only refreshes last.ckpt when val_acc improves, so a
    # requeued run would redo every epoch since its last improvement. This one writes it every epoch.
    callbacks.append(ModelCheckpoint(
        dirpath=out_dir / "checkpoints", filename="last", monitor=None, save_top_k=1, enable_version_counter=False,
    ))
    callbacks.append(LearningRateMonitor(logging_interval="step"))
    return callbacks
