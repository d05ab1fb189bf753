"""What a fit did, read from its callbacks when it ends: best checkpoint, early stop, SWA, epochs, steps.

Read before testing: loading the best checkpoint to test it also loads every callback's older state.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, StochasticWeightAveraging

from cifar_hpc.config.train_config import TrainConfig


def fit_facts(trainer: pl.Trainer, cfg: TrainConfig) -> dict[str, Any]:
    """What the callbacks know at the end of fit (testing a checkpoint reloads their older state)."""
    checkpoint = next(c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor == "val_acc")
    latest = next(c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor is None)
    early = _callback(trainer, EarlyStopping)
    swa = _callback(trainer, StochasticWeightAveraging)
    score = checkpoint.best_model_score
    return {
        "best_checkpoint": checkpoint.best_model_path or None,
        "last_checkpoint": latest.best_model_path or None,
        "best_val_acc": float(score) if score is not None else None,
        "stopped_epoch": early.stopped_epoch if early is not None and early.stopped_epoch else None,
        "epochs_run": min(trainer.current_epoch, cfg.epochs),  # SWA's extra BatchNorm epoch is not training
        "swa_applied": _swa_applied(swa, trainer.lightning_module) if swa is not None else None,
        "swa_lr": getattr(swa, "swa_lr", None),  # the LR SWA averaged at (callbacks.SwaAtPeakFraction)
        "global_step": trainer.global_step,
    }


def _callback(trainer: pl.Trainer, kind: type) -> Any:
    return next((c for c in trainer.callbacks if isinstance(c, kind)), None)


def _swa_applied(swa: StochasticWeightAveraging, module: pl.LightningModule) -> bool:
    """True when the module now holds SWA's averaged weights (Lightning copies them in at the end of
    the last epoch; an early stop never gets them). Read through the callback's public ``state_dict``:
    at least one epoch was averaged, and the module's parameters equal the averaged ones."""
    state = swa.state_dict()
    average = state["average_model_state"]
    if not state["n_averaged"] or average is None:
        return False
    return all(
        torch.equal(average[name].detach().cpu(), param.detach().cpu()) for name, param in module.named_parameters()
    )
