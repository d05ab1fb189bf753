"""Training tricks: their names, what each means in config terms, and how clashes are resolved.

Pure and free of Lightning (grids and ``submit`` import it); the Lightning callbacks that carry
the tricks out are built in ``cifar_hpc.training.callbacks``.

The known clashes, and what we chose (each choice is recorded in ``result.json`` under
``resolutions`` when it applies to a run):

* **SWA replaces the LR scheduler** from its start epoch (SWALR anneals to SWA's LR). Our main
  schedule is therefore laid out over the epochs *before* SWA starts, so one-cycle/cosine finish
  their shape instead of being cut off mid-way.
* **SWA's LR is relative to the peak LR** (``swa_lr``: ``swa_lr_factor`` x the peak, 0.2 by
  default) unless ``swa_lrs`` gives an absolute one. An absolute default (0.01) made ``+swa`` at a
  peak of 0.004 raise the LR 2.5x for its last epochs: the row measured "SWA plus a higher late
  LR". The LR it ran at is in ``result.json`` (``lightning.swa_lr``) and in its resolutions.
* **SWA only applies its averaged weights when training reaches ``max_epochs``**, so an early stop
  would silently throw them away. SWA wins: early stopping is switched off when SWA is on.
  This is the one resolution that changes *what is trained* (the others change how a trick is
  carried out): it is a ``Clash`` in ``CLASHES``, and ``effective(cfg)`` applies it. The callbacks,
  the grid's duplicate check and the design notes (``cifar_hpc.study.design``) all read ``effective``, so
  there is one rule.
* **SWA with the LR finder**: the finder sweeps with SWA out of the way (Lightning swaps all
  callbacks out during the sweep) and its pick is the peak LR: of the main schedule, and the one
  SWA's LR is a fraction of (an absolute ``swa_lrs`` stays as given).
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

import dataclasses
from dataclasses import dataclass
from typing import Any

from cifar_hpc.config.train_config import TrainConfig

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


@dataclass(frozen=True)
class Clash:
    """Two tricks that cannot both act: when both are on, ``loser`` is switched off."""

    name: str
    """As in ``resolutions`` and result.json, e.g. ``swa+early_stop``."""
    winner: str
    loser: str
    note: str
    """Why, for result.json and the log."""

    @property
    def rule(self) -> str:
        return f"{self.winner} on switches {self.loser} off"

    @property
    def keys(self) -> tuple[str, ...]:
        """The dotted settings the resolution changes."""
        return tuple(f"{section}.{key}" for section, values in TRICK_OFF[self.loser].items() for key in values)


CLASHES: tuple[Clash, ...] = (
    Clash("swa+early_stop", "swa", "early_stop", "early stopping disabled so that SWA's averaged weights are applied"),
)
"""The resolutions that change what is trained, applied in this order by ``effective``."""


def effective(cfg: TrainConfig) -> TrainConfig:
    """The config as it is trained: every clash resolved (the same object when none applies)."""
    return _resolve(cfg)[0]


def applied_clashes(cfg: TrainConfig) -> list[Clash]:
    """The clashes that ``effective`` resolves for this config."""
    return _resolve(cfg)[1]


def _resolve(cfg: TrainConfig) -> tuple[TrainConfig, list[Clash]]:
    applied = []
    for clash in CLASHES:  # in order, each on the result of the ones before
        on = enabled_tricks(cfg)
        if clash.winner in on and clash.loser in on:
            applied.append(clash)
            cfg = _switch_off(cfg, clash.loser)
    return cfg, applied


def _switch_off(cfg: TrainConfig, trick: str) -> TrainConfig:
    for section, values in TRICK_OFF[trick].items():
        cfg = cfg.replace(**{section: dataclasses.replace(getattr(cfg, section), **values)})
    return cfg


def enabled_tricks(cfg: TrainConfig) -> list[str]:
    """The names of the tricks a config switches on, in TRICKS order."""
    on = {
        "crop": cfg.augment.crop,
        "flip": cfg.augment.flip,
        "rotate": cfg.augment.rotate,
        "lr_find": cfg.tricks.lr_find,
        "swa": cfg.tricks.swa,
        "accumulate": bool(cfg.tricks.accumulate),
        "clip": cfg.tricks.clip,
        "early_stop": cfg.tricks.early_stop,
    }
    return [name for name in TRICKS if on[name]]


def resolutions(cfg: TrainConfig, peak_lr: float | None = None) -> list[str]:
    """What this run's trick combination changed, in words, for result.json, the log and the table.
    ``peak_lr``: the LR finder's pick when it made one (else the configured ``optim.lr``)."""
    notes = []
    if cfg.tricks.swa:
        peak = cfg.optim.lr if peak_lr is None else peak_lr
        lr = swa_lr(cfg, peak)
        if cfg.tricks.lr_find and peak_lr is None:  # before the sweep: the peak is not known yet
            at = (
                f"swa_lrs {lr:.3g}"
                if cfg.tricks.swa_lrs is not None
                else f"{cfg.tricks.swa_lr_factor:g} x the found LR"
            )
        elif cfg.tricks.swa_lrs is not None:
            at = f"swa_lrs {lr:.3g} ({lr / peak:.3g} x the peak LR {peak:.3g})"
        else:
            at = f"{cfg.tricks.swa_lr_factor:g} x the peak LR ({lr:.3g})"
        start = swa_start_epoch(cfg)
        notes.append(
            f"swa: SWA from epoch {start} of {cfg.epochs} at {at}; "
            f"the main {cfg.optim.schedule} schedule spans the {start} epochs before"
        )
    notes += [f"{clash.name}: {clash.note}" for clash in applied_clashes(cfg)]
    if cfg.tricks.swa and cfg.tricks.lr_find:
        notes.append(
            "swa+lr_find: the found LR sets the main schedule's peak; swa_lrs unchanged"
            if cfg.tricks.swa_lrs is not None
            else f"swa+lr_find: the found LR sets the main schedule's peak and SWA's LR ({cfg.tricks.swa_lr_factor:g} x it)"
        )
    return notes


def swa_lr(cfg: TrainConfig, peak_lr: float | None = None) -> float:
    """The LR SWA anneals to and averages at: ``swa_lrs`` when given, else ``swa_lr_factor`` x the
    peak LR (``peak_lr``, the LR finder's pick; else ``optim.lr``)."""
    if cfg.tricks.swa_lrs is not None:
        return cfg.tricks.swa_lrs
    return cfg.tricks.swa_lr_factor * (cfg.optim.lr if peak_lr is None else peak_lr)


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
