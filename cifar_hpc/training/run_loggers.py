"""A run's loggers: ``logs/metrics.csv`` always, W&B unless disabled (online only when it answers);
opened by ``make_loggers`` and closed, W&B's files complete, by ``close_loggers``."""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.loggers import Logger, WandbLogger

from cifar_hpc.config.train_config import TrainConfig
from cifar_hpc.training.metrics_log import RunCsvLogger
from cifar_hpc.training.wandb_mode import WandbChoice, resolve_wandb


def make_loggers(cfg: TrainConfig, out_dir: Path) -> tuple[list[Logger], WandbChoice | None]:
    """The run's loggers, and what W&B was set to and why (None: W&B disabled); the caller logs
    ``choice.warning``, W&B's fall back to offline."""
    loggers: list[Logger] = [RunCsvLogger(out_dir)]  # logs/metrics.csv, continued by a resumed attempt
    if cfg.wandb.mode == "disabled":
        return loggers, None
    # online only when W&B answers within a few seconds; else offline, with one warning line
    choice = resolve_wandb(cfg.wandb.mode)
    # A W&B service token inherited from whoever submitted the job names that process's service:
    # a socket on another host or outside this container, or a service still holding this run's
    # id from the attempt a requeue killed ("run ID is in use"). Each training process starts its own.
    os.environ.pop("WANDB_SERVICE", None)
    wandb_logger = WandbLogger(
        project=cfg.wandb.project,
        group=cfg.wandb.group,
        job_type=cfg.wandb.job_type,
        tags=list(cfg.wandb.tags),
        id=cfg.run_id,
        name=cfg.run_id,
        save_dir=str(out_dir),
        offline=choice.offline,
        resume="allow",
        log_model=False,
    )
    # Lightning always passes wandb.init `anonymous=None`, which recent W&B (0.31 here) answers with a warning
    # that the setting has no effect, at every start; leaving the argument out changes nothing else
    getattr(wandb_logger, "_wandb_init", {}).pop("anonymous", None)  # Lightning's own init arguments
    return [*loggers, wandb_logger], choice


def close_loggers(trainer: pl.Trainer, exit_code: int | None = None) -> None:
    """Finish the W&B run (global rank 0, which alone logs to it; ``exit_code`` non-zero: as failed)
    and wait for its files; a W&B run never started (stopped before it) is not started now."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and trainer.is_global_zero and logger._experiment is not None:
            logger.experiment.finish(exit_code=exit_code)
            # finish() can return before the offline .wandb file is complete; teardown waits for it
            import wandb

            wandb.teardown()
