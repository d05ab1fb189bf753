"""One training run: ``run(cfg)`` validates, trains, tests and writes ``<out>/result.json``.

Everything a user can get wrong (config, data, output folder, world size) is checked before the
first file is written. The run resumes from its own ``checkpoints/last.ckpt`` when one exists
(a requeued job), under the same W&B id, and a run whose ``result.json`` says completed is not
trained again.

An attempt is four steps, in ``_attempt``: **prepare** (skip a run that has its result, claim the
folder, load the data, resolve the devices), **build** (the attempt's record, callbacks, loggers,
Trainer, module), **fit and test**, **record** (the result, written before and after the teardown).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_only

from cifar_hpc.base import console, signals
from cifar_hpc.config.train_config import TrainConfig
from cifar_hpc.data import cifar_files, fetch
from cifar_hpc.data.fingerprint import with_fingerprint
from cifar_hpc.training import run_folder, telemetry
from cifar_hpc.training.attempts import AttemptLog, attempt_started_at, failed_in_this_job, reason_for
from cifar_hpc.training.callbacks import LrFinderThenReschedule, build_callbacks
from cifar_hpc.training.checkpoints import CHECKPOINT_DIR, SWA_CKPT, AtomicCheckpointIO, resume_checkpoint
from cifar_hpc.training.compiling import compile_network, share_compile_cache
from cifar_hpc.training.devices import DeviceSettings, resolve_device_settings
from cifar_hpc.training.fit_facts import fit_facts
from cifar_hpc.training.loaders import CifarDataModule
from cifar_hpc.training.module import CifarResNet, NonFiniteLossError
from cifar_hpc.training.progress import EpochProgress, RunningLossBar
from cifar_hpc.training.provenance import provenance
from cifar_hpc.training.results import RESULT_FILE, check_writable, read_result, usable_completed, write_result
from cifar_hpc.training.run_folder import output_dir
from cifar_hpc.training.run_loggers import close_loggers, make_loggers
from cifar_hpc.training.timing import RunClock
from cifar_hpc.training.tricks import enabled_tricks, resolutions, schedule_epochs, trainer_arguments
from cifar_hpc.training.unfinished import end_unfinished
from cifar_hpc.training.wandb_mode import WandbChoice

IMPORTED_AT = time.time()
"""When this module and what it needs (torch, Lightning) were imported: the end of ``timing.imports_s``."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """A run checked and set up, before its Trainer exists (``_prepare``); nothing is written yet."""

    cfg: TrainConfig
    """The run's config, with the fingerprint of the data it found (and staged)."""
    out_dir: Path
    started: float
    """When the attempt began (``attempts.attempt_started_at``)."""
    rank_zero: bool
    """Global rank 0, read from the environment: the process that writes the run's files."""
    clock: RunClock
    data_kind: str
    """``cifar10`` or ``generated``."""
    datamodule: CifarDataModule
    devices: DeviceSettings


@dataclass(frozen=True)
class Built:
    """The attempt's Lightning objects and its record (``_build``)."""

    trainer: pl.Trainer
    module: CifarResNet
    callbacks: list[Callback]
    attempts: AttemptLog
    wandb_choice: WandbChoice | None


def run(
    cfg: TrainConfig,
    *,
    extra_callbacks: list[Callback] | tuple[Callback, ...] = (),
    overwrite: bool = False,
    keep_process_group: bool = False,
) -> dict[str, Any]:
    """Train, test and write the result of one run; returns the result.

    ``overwrite`` replaces another run found in the output folder (refused otherwise).
    ``keep_process_group`` leaves the DDP process group up for the next run of a pack (``cifar_hpc.training.pack``).
    ``extra_callbacks`` join the run's own (benchmarks use it to time accuracy per epoch).
    Ctrl-C raises ``Interrupted`` (the run resumes from its last checkpoint when started again), a
    SIGTERM ``Terminated`` (the same, when Slurm brings the job back)."""
    with signals.watching():
        return _attempt(cfg, extra_callbacks, overwrite, keep_process_group)


def _attempt(
    cfg: TrainConfig, extra_callbacks: Sequence[Callback], overwrite: bool, keep_process_group: bool
) -> dict[str, Any]:
    started = attempt_started_at()
    console.configure()  # a Slurm job or a worker process never went through the CLI
    if cfg.data.fingerprint is None:
        cfg = with_fingerprint(cfg)  # the data is part of the run's identity, so of its folder
    previous = _standing_result(cfg, output_dir(cfg))
    if previous is not None:
        return previous
    prepared = _prepare(cfg, started, overwrite=overwrite)
    built = _build(prepared, extra_callbacks)
    result, facts = _fit_and_test(prepared, built)
    return _record(prepared, built, result, facts, keep_process_group=keep_process_group)


# --- prepare: everything a user can get wrong, before anything is written ------------------------


def _standing_result(cfg: TrainConfig, out_dir: Path) -> dict[str, Any] | None:
    """The result that already stands for this run (it completed, or failed in this very job), or None."""
    previous = read_result(out_dir)
    if usable_completed(previous, cfg.run_id):
        log.info("run %s already completed: %s", cfg.run_id, out_dir / RESULT_FILE)
        return previous
    if failed_in_this_job(previous, cfg.run_id):
        # this very Slurm job failed it before being requeued (a pack goes on after a failed run, then
        # is preempted): the failure stands, as `status` says; `submit --retry-failed` retrains it
        log.info("run %s failed earlier in this job; not retried: %s", cfg.run_id, previous.get("error"))
        return previous
    return None


def _prepare(cfg: TrainConfig, started: float, *, overwrite: bool) -> Prepared:
    """Claim the output folder, load the data, resolve the devices; refuse what cannot work (``UserError``)."""
    out_dir = output_dir(cfg)
    check_writable(out_dir)
    rank_zero = rank_zero_only.rank == 0  # from the environment: the Trainer does not exist yet
    run_folder.claim(out_dir, cfg, overwrite=overwrite, rank_zero=rank_zero)
    clock = RunClock(cfg.batch_size, started=started, imported=IMPORTED_AT, compile=cfg.compile)
    cfg, arrays = _load_data(cfg, clock)
    devices = resolve_device_settings(cfg)
    datamodule = CifarDataModule(arrays, cfg, channels_last=devices.channels_last, pin_memory=devices.on_gpu)
    # devices='auto' is only resolved by the Trainer; check what can be checked now, the rest in _build
    datamodule.check_world_size((cfg.device_count or 1) * cfg.num_nodes)
    return Prepared(cfg, out_dir, started, rank_zero, clock, arrays.kind, datamodule, devices)


def _load_data(cfg: TrainConfig, clock: RunClock) -> tuple[TrainConfig, cifar_files.CifarArrays]:
    """The verified (and staged) dataset in memory, and ``cfg`` with the fingerprint of what was staged."""
    clock.mark("data_start")
    data_dir = cifar_files.verify(cfg.data.dir)
    if cfg.data.stage:
        data_dir = fetch.stage_to_scratch(data_dir)
    cfg = with_fingerprint(cfg, data_dir)  # what was staged is what the run was set up with
    arrays = load_arrays(data_dir)
    clock.mark("data_end")
    return cfg, arrays


_loaded: dict[str, Any] = {}


def load_arrays(data_dir: Path) -> cifar_files.CifarArrays:
    """The dataset in memory, read once per process for the runs of a pack: the last folder read is
    kept, keyed by its path and its files' sizes and modification times (a regenerated folder is read again)."""
    files = sorted(p for p in Path(data_dir).iterdir() if p.is_file())
    key = str(Path(data_dir).resolve()) + "".join(f"|{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    if key not in _loaded:
        _loaded.clear()  # one dataset at a time: CIFAR-10 is 180 MB
        _loaded[key] = cifar_files.load_cifar10(data_dir)
    return _loaded[key]


# --- build: the attempt's record, callbacks, loggers, Trainer and module ----------------------------


def _build(prep: Prepared, extra_callbacks: Sequence[Callback]) -> Built:
    """Seed, open the attempt (``attempts.json``), make the Trainer and the module, and write
    ``config.json`` (the sign that the run started)."""
    cfg = prep.cfg
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if prep.devices.on_gpu:
        torch.set_float32_matmul_precision("high")
    attempts = AttemptLog.begin(prep.out_dir, host=telemetry.host_name(), started=prep.started, writes=prep.rank_zero)
    prep.clock.attempts = attempts
    callbacks = _callbacks(prep, extra_callbacks)
    loggers, wandb_choice = make_loggers(cfg, prep.out_dir)
    if wandb_choice is not None and wandb_choice.warning:
        log.warning("%s", wandb_choice.warning)  # W&B fell back to offline: why
    trainer = _trainer(prep, callbacks, loggers)
    prep.datamodule.check_world_size(trainer.world_size)  # devices='auto' is only known now
    attempts.current.gpus = trainer.world_size if prep.devices.on_gpu else 0
    attempts.current.devices = trainer.world_size
    module = CifarResNet(
        cfg,
        batches_per_epoch=prep.datamodule.batches_per_epoch,
        channels_last=prep.devices.channels_last,
        schedule_epochs=schedule_epochs(cfg),
    )
    if cfg.compile:  # the network, in place, its cache beside the study's runs (training/compiling.py)
        share_compile_cache(prep.out_dir, torch.device("cuda" if prep.devices.on_gpu else "cpu"))
        compile_network(module.model, cfg.compile_mode, gpu=prep.devices.on_gpu)
        module.cudagraph_steps = cfg.compile_mode == "reduce-overhead" and prep.devices.on_gpu
    if trainer.is_global_zero:
        run_folder.write_config(prep.out_dir, cfg)
    return Built(trainer, module, callbacks, attempts, wandb_choice)


def _callbacks(prep: Prepared, extra_callbacks: Sequence[Callback]) -> list[Callback]:
    """The run's clock and telemetry, the recipe's callbacks (tricks, checkpoints), progress, then the caller's."""
    cfg, out_dir = prep.cfg, prep.out_dir
    callbacks: list[Callback] = [prep.clock, telemetry.GpuTelemetry(out_dir, interval_s=cfg.telemetry_interval_s)]
    callbacks += build_callbacks(cfg, out_dir, lr_finder_steps=min(100, prep.datamodule.batches_per_epoch * cfg.epochs))
    callbacks.append(EpochProgress(cfg.run_id, out_dir, cfg.epochs, bar=_progress_bar(), started=prep.started))
    if _progress_bar():
        callbacks.append(RunningLossBar())  # the running loss without a read per step
    return callbacks + list(extra_callbacks)


def _progress_bar() -> bool:
    """Lightning's progress bar on a terminal; else (a Slurm log, CI, a pipe) one line per epoch."""
    return console.progress_bar()


def _trainer(prep: Prepared, callbacks: list[Callback], loggers: list) -> pl.Trainer:
    """The run's Trainer: its devices, checkpoints written atomically, Slurm's requeue, and the tricks' arguments."""
    cfg, devices = prep.cfg, prep.devices
    return pl.Trainer(
        accelerator=devices.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        precision=devices.precision,
        max_epochs=cfg.epochs,
        callbacks=callbacks,
        logger=loggers,
        default_root_dir=str(prep.out_dir),
        benchmark=devices.on_gpu,
        log_every_n_steps=max(1, min(50, prep.datamodule.batches_per_epoch)),
        enable_progress_bar=_progress_bar(),
        enable_model_summary=False,
        plugins=[AtomicCheckpointIO(run_id=cfg.run_id), *_cluster_plugins()],
        # both loaders shard themselves (cifar_hpc.training.batches.ShardBatches: resumable, seeded per epoch)
        use_distributed_sampler=False,
        **trainer_arguments(cfg),
    )


def _cluster_plugins() -> list:
    """Lightning's Slurm environment inside a Slurm job (ranks, nodes, master address), else none. Its
    auto-requeue is off: it would save another checkpoint inside the signal handler. The requeue signal
    is noted by checkpoint_policy.TimedLastCheckpoint, which saves at the step's end and then hands
    over to submitit, or requeues a plain sbatch job itself."""
    if SLURMEnvironment.detect():
        return [SLURMEnvironment(auto_requeue=False, requeue_signal=signals.REQUEUE_SIGNAL)]
    return []


# --- fit and test ---------------------------------------------------------------------------------


def _fit_and_test(prep: Prepared, built: Built) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit (resumed from the run's own checkpoint) and test: the result so far and the fit's facts.
    A diverged loss is a failed result; a signal or a crash ends the attempt (``unfinished.end_unfinished``)."""
    cfg, trainer, clock = prep.cfg, built.trainer, prep.clock
    wandb_warning = built.wandb_choice.warning if built.wandb_choice else None
    result: dict[str, Any] = {
        "run_id": cfg.run_id,
        "status": "completed",
        "error": None,
        "wandb_warning": wandb_warning,
    }
    try:
        # the newest complete checkpoint of this very run; a truncated or foreign one is skipped, with one line
        resume = resume_checkpoint(prep.out_dir, cfg.run_id, log.warning if trainer.is_global_zero else lambda _: None)
        if resume is not None and trainer.is_global_zero:
            log.info("run %s resumes from %s", cfg.run_id, resume)
        # the loggers start here (W&B's init) as Lightning would start them inside fit's set-up,
        # so that timing.process_group_s measures the process group, not W&B
        for logger in trainer.loggers:
            _ = logger.experiment
        clock.mark("fit")
        trainer.fit(built.module, datamodule=prep.datamodule, ckpt_path=resume)
        # read before testing: loading the best checkpoint also loads every callback's older state
        facts = fit_facts(trainer, cfg)
        tested = time.perf_counter()
        result.update(_evaluate(trainer, built.module, prep.datamodule, cfg, facts))
        clock.test_seconds = time.perf_counter() - tested
    except NonFiniteLossError as error:
        facts = fit_facts(trainer, cfg)
        result.update(status="failed", error=str(error))
    except BaseException as error:
        # stopped from outside: Interrupted or Terminated, and no result; broken: a failed result
        end_unfinished(
            error,
            cfg=cfg,
            out_dir=prep.out_dir,
            trainer=trainer,
            clock=clock,
            attempts=built.attempts,
            result=result,
        )
        raise
    return result, facts


def _evaluate(
    trainer: pl.Trainer, module: CifarResNet, datamodule: CifarDataModule, cfg: TrainConfig, facts: dict[str, Any]
) -> dict:
    """Test accuracy of the weights the run stands for: SWA's average, else the best-val checkpoint."""
    if cfg.tricks.swa:
        weights, ckpt_path = "swa", None
        trainer.save_checkpoint(output_dir(cfg) / CHECKPOINT_DIR / SWA_CKPT)
    else:
        weights, ckpt_path = "best", facts["best_checkpoint"]
    metrics = trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)[0]
    # test_images: the resolution of test_acc (one image), which collect compares accuracies at
    return {"test_acc": float(metrics["test_acc"]), "test_images": len(datamodule.test_y), "test_weights": weights}


# --- record: the result, before and after the teardown --------------------------------------------


def _record(
    prep: Prepared, built: Built, result: dict[str, Any], facts: dict[str, Any], *, keep_process_group: bool
) -> dict[str, Any]:
    """End the attempt and write the result (global rank 0). It is on disk before W&B's finish, which
    can hang or be killed; the teardown is then measured and the result written again with it
    (``attempts.json`` too)."""
    trainer, attempts, clock = built.trainer, built.attempts, prep.clock
    attempts.current.timing = clock.block()
    attempts.end(reason_for(None) if result["status"] == "completed" else f"failed: {result['error']}")
    result.update(_describe(prep, built))
    result.update(attempts.totals())
    for key in ("best_val_acc", "stopped_epoch", "epochs_run"):
        result[key] = facts.pop(key)
    result["lightning"].update(facts)
    if trainer.is_global_zero:
        write_result(prep.out_dir, result)
        if result["status"] != "completed":  # a job's log says why, not only result.json
            log.error("run %s failed: %s (%s)", prep.cfg.run_id, result["error"], prep.out_dir / RESULT_FILE)
    torn_down = time.perf_counter()
    _finish(trainer, keep_process_group=keep_process_group)
    clock.teardown_seconds = time.perf_counter() - torn_down
    attempts.record_timing(clock.block())
    result.update(attempts.totals())
    if trainer.is_global_zero:
        write_result(prep.out_dir, result)
    return result


def _describe(prep: Prepared, built: Built) -> dict[str, Any]:
    """What the run was and did; its cost (``wall_s``, ``gpu_hours``, ...) sums every attempt (``AttemptLog.totals``)."""
    cfg, trainer, devices = prep.cfg, built.trainer, prep.devices
    finder = next((c for c in built.callbacks if isinstance(c, LrFinderThenReschedule)), None)
    gpu = {
        key: value
        for key, value in telemetry.summarize(prep.out_dir).items()
        if key in ("gpu_util_mean", "gpu_util_p95", "gpu_mem_peak_mib")
    }
    return {
        "config": cfg.to_dict(),
        "data": prep.data_kind,
        "data_fingerprint": cfg.data.fingerprint,
        **gpu,
        "lr_found": finder.lr_found if finder is not None else None,
        "lr_find_warning": finder.warning if finder is not None else None,
        "tricks": enabled_tricks(cfg),
        "resolutions": resolutions(cfg, finder.lr_found if finder is not None else None),
        "lightning": {
            "accumulation_by_epoch": {str(k): v for k, v in sorted(prep.clock.accumulation_by_epoch.items())},
            "gradient_clip_val": trainer.gradient_clip_val,
            "precision": devices.precision,
            "accelerator": devices.accelerator,
            "channels_last": devices.channels_last,
        },
        "world_size": trainer.world_size,
        **provenance(),
        "started_at": built.attempts.all[0].started_at,
        "finished_at": built.attempts.current.ended_at,
    }


def _finish(trainer: pl.Trainer, *, keep_process_group: bool = False) -> None:
    """Close the loggers and the process group (unless the next run of a pack reuses it): CPU DDP runs
    abort at exit (134) when the group is left up."""
    close_loggers(trainer)
    if not keep_process_group and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
