"""One training run: ``run(cfg)`` validates, trains, tests and writes ``<out>/result.json``.

Everything a user can get wrong (config, data, output folder, world size) is checked before the
first file is written. The run resumes from its own ``checkpoints/last.ckpt`` when one exists
(a requeued job), under the same W&B id, and a run whose ``result.json`` says completed is not
trained again.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning
import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, StochasticWeightAveraging
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_only

import cifar_hpc
from cifar_hpc.base import console, signals
from cifar_hpc.base.errors import Interrupted, Terminated, UserError
from cifar_hpc.cluster.profiles import TIMED_OUT_TOO_OFTEN, out_of_time_note
from cifar_hpc.config.train_config import TrainConfig, check_devices_on_cpu
from cifar_hpc.data import cifar_files, fetch
from cifar_hpc.data.fingerprint import with_fingerprint
from cifar_hpc.training import run_folder, telemetry
from cifar_hpc.training.attempts import AttemptLog, attempt_started_at, failed_in_this_job, reason_for, stop_kind
from cifar_hpc.training.callbacks import LrFinderThenReschedule, build_callbacks
from cifar_hpc.training.checkpoints import AtomicCheckpointIO, resume_checkpoint
from cifar_hpc.training.loaders import CifarDataModule
from cifar_hpc.training.metrics_log import RunCsvLogger
from cifar_hpc.training.module import CifarResNet, NonFiniteLossError
from cifar_hpc.training.progress import EpochProgress
from cifar_hpc.training.results import check_writable, read_result, usable_completed, write_result
from cifar_hpc.training.run_folder import output_dir
from cifar_hpc.training.timing import RunClock
from cifar_hpc.training.tricks import enabled_tricks, resolutions, schedule_epochs, trainer_arguments
from cifar_hpc.training.wandb_mode import WandbChoice, resolve_wandb

IMPORTED_AT = time.time()
"""When this module and what it needs (torch, Lightning) were imported: the end of ``timing.imports_s``."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    """What ``auto`` settings resolve to on this machine."""

    accelerator: str
    precision: str
    channels_last: bool
    on_gpu: bool


def resolve_runtime(cfg: TrainConfig) -> Runtime:
    on_gpu = cfg.accelerator in ("gpu", "cuda") or (cfg.accelerator == "auto" and torch.cuda.is_available())
    if on_gpu and not torch.cuda.is_available():
        raise UserError(f"accelerator {cfg.accelerator!r} asked for, but torch sees no CUDA GPU here")
    if not on_gpu:
        check_devices_on_cpu(cfg.devices)  # auto resolved to CPU: GPU indices mean nothing here
    precision = cfg.precision
    if precision == "auto":
        precision = "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true"
    channels_last = on_gpu if cfg.channels_last is None else cfg.channels_last
    return Runtime("gpu" if on_gpu else "cpu", precision, channels_last, on_gpu)


def make_loggers(cfg: TrainConfig, out_dir: Path) -> tuple[list, WandbChoice | None]:
    """The run's loggers, and what W&B was set to and why (None: W&B disabled)."""
    loggers: list = [RunCsvLogger(out_dir)]  # logs/metrics.csv, continued by a resumed attempt
    choice = None
    if cfg.wandb.mode != "disabled":
        # online only when W&B answers within a few seconds; else offline, with one warning line
        choice = resolve_wandb(cfg.wandb.mode)
        if choice.warning:
            log.warning("%s", choice.warning)
        # A W&B service token inherited from whoever submitted the job names that process's service:
        # a socket on another host or outside this container, or a service still holding this run's
        # id from the attempt a requeue killed ("run ID is in use"). Each training process starts its own.
        os.environ.pop("WANDB_SERVICE", None)
        loggers.append(
            WandbLogger(
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
        )
        # Lightning always passes wandb.init `anonymous=None`, which recent W&B (0.31 here) answers with a warning
        # that the setting has no effect, at every start; leaving the argument out changes nothing else
        getattr(loggers[-1], "_wandb_init", {}).pop("anonymous", None)  # Lightning's own init arguments
    return loggers, choice


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
    out_dir = output_dir(cfg)
    previous = read_result(out_dir)
    if usable_completed(previous, cfg.run_id):
        log.info("run %s already completed: %s", cfg.run_id, out_dir / "result.json")
        return previous
    if failed_in_this_job(previous, cfg.run_id):
        # this very Slurm job failed it before being requeued (a pack goes on after a failed run, then
        # is preempted): the failure stands, as `status` says; `submit --retry-failed` retrains it
        log.info("run %s failed earlier in this job; not retried: %s", cfg.run_id, previous.get("error"))
        return previous

    # --- everything a user can get wrong, before anything is written --------------------------
    check_writable(out_dir)
    rank_zero = rank_zero_only.rank == 0  # from the environment: the Trainer does not exist yet
    run_folder.claim(out_dir, cfg, overwrite=overwrite, rank_zero=rank_zero)
    clock = RunClock(cfg.batch_size, started=started, imported=IMPORTED_AT, compile=cfg.compile)
    clock.mark("data_start")
    data_dir = cifar_files.verify(cfg.data.dir)
    if cfg.data.stage:
        data_dir = fetch.stage_to_scratch(data_dir)
    cfg = with_fingerprint(cfg, data_dir)  # what was staged is what the run was set up with
    arrays = load_arrays(data_dir)
    clock.mark("data_end")
    runtime = resolve_runtime(cfg)
    datamodule = CifarDataModule(arrays, cfg, channels_last=runtime.channels_last, pin_memory=runtime.on_gpu)
    # devices='auto' is only resolved by the Trainer; check what can be checked now, the rest below
    datamodule.check_world_size((cfg.device_count or 1) * cfg.num_nodes)

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if runtime.on_gpu:
        torch.set_float32_matmul_precision("high")
    attempts = AttemptLog.begin(out_dir, host=telemetry.host_name(), started=started, writes=rank_zero)
    clock.attempts = attempts
    callbacks = [clock, telemetry.GpuTelemetry(out_dir, interval_s=cfg.telemetry_interval_s)]
    callbacks += build_callbacks(cfg, out_dir, lr_finder_steps=min(100, datamodule.batches_per_epoch * cfg.epochs))
    show_bar = sys.stderr.isatty()  # else (a Slurm log, CI, a pipe) one line per epoch
    callbacks.append(EpochProgress(cfg.run_id, out_dir, cfg.epochs, lines=not show_bar, started=started))
    callbacks += list(extra_callbacks)
    loggers, wandb_choice = make_loggers(cfg, out_dir)
    trainer = pl.Trainer(
        accelerator=runtime.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        precision=runtime.precision,
        max_epochs=cfg.epochs,
        callbacks=callbacks,
        logger=loggers,
        default_root_dir=str(out_dir),
        benchmark=runtime.on_gpu,
        log_every_n_steps=max(1, min(50, datamodule.batches_per_epoch)),
        enable_progress_bar=show_bar,
        enable_model_summary=False,
        plugins=[AtomicCheckpointIO(run_id=cfg.run_id), *_cluster_plugins()],
        # both loaders shard themselves (cifar_hpc.training.batches.ShardBatches: resumable, seeded per epoch)
        use_distributed_sampler=False,
        **trainer_arguments(cfg),
    )
    datamodule.check_world_size(trainer.world_size)  # devices='auto' is only known now
    attempts.current.gpus = trainer.world_size if runtime.on_gpu else 0
    attempts.current.devices = trainer.world_size

    module = CifarResNet(
        cfg,
        batches_per_epoch=datamodule.batches_per_epoch,
        channels_last=runtime.channels_last,
        schedule_epochs=schedule_epochs(cfg),
    )
    fit_module = torch.compile(module) if cfg.compile else module
    if trainer.is_global_zero:
        run_folder.write_config(out_dir, cfg)
    last = out_dir / "checkpoints" / "last.ckpt"

    result: dict[str, Any] = {
        "run_id": cfg.run_id,
        "status": "completed",
        "error": None,
        "wandb_warning": wandb_choice.warning if wandb_choice else None,
    }
    try:
        # the newest complete checkpoint of this very run; a truncated or foreign one is skipped, with one line
        resume = resume_checkpoint(out_dir, cfg.run_id, log.warning if trainer.is_global_zero else lambda _: None)
        if resume is not None and trainer.is_global_zero:
            log.info("run %s resumes from %s", cfg.run_id, resume)
        # the loggers start here (W&B's init) as Lightning would start them inside fit's set-up,
        # so that timing.process_group_s measures the process group, not W&B
        for logger in trainer.loggers:
            _ = logger.experiment
        clock.mark("fit")
        trainer.fit(fit_module, datamodule=datamodule, ckpt_path=resume)
        # read before testing: loading the best checkpoint also loads every callback's older state
        facts = _fit_facts(trainer, cfg)
        tested = time.perf_counter()
        result.update(_evaluate(trainer, module, datamodule, cfg, facts))
        clock.test_seconds = time.perf_counter() - tested
    except NonFiniteLossError as error:
        facts = _fit_facts(trainer, cfg)
        result.update(status="failed", error=str(error))
    except BaseException as error:
        cause = clock.stopped_by or error
        stopped = _stopped(cause, trainer)
        attempts.current.timing = clock.block()
        attempts.end(reason_for(cause, stopped))
        if stopped is None and trainer.is_global_zero:
            # a bug, a full disk or a broken node: still leave a result that says so, then fail loudly
            _write_failure(
                out_dir,
                {
                    **result,
                    "status": "failed",
                    "error": _error_text(cause, attempts),
                    "config": cfg.to_dict(),
                    "requeues": _requeues(),
                    "finished_at": attempts.current.ended_at,
                    **attempts.totals(),
                },
            )
        # Stopped by a signal, no result: Slurm's state says why (cancelled, preempted, requeued,
        # time limit), and the next attempt resumes. A ConnectionResetError from W&B, whose service
        # the same SIGTERM killed first, is the signal's doing, not the run's.
        if stopped == "interrupted":
            raise Interrupted(
                f"interrupted; run the same command again to resume {cfg.run_id} from {last}"
                if last.exists()
                else f"interrupted before the first checkpoint; run the same command again to start {cfg.run_id}"
            ) from None
        if stopped == "terminated" and isinstance(cause, Exception):
            # e.g. W&B's service, killed by the same SIGTERM: the job is going away, not the run failing
            raise Terminated(f"run {cfg.run_id} stopped by SIGTERM ({type(cause).__name__}: {cause})") from cause
        raise
    attempts.current.timing = clock.block()
    attempts.end(reason_for(None) if result["status"] == "completed" else f"failed: {result['error']}")

    result.update(_describe(cfg, trainer, clock, callbacks, out_dir, arrays.kind, runtime, attempts))
    result.update(attempts.totals())
    result["best_val_acc"] = facts.pop("best_val_acc")
    result["stopped_epoch"] = facts.pop("stopped_epoch")
    result["epochs_run"] = facts.pop("epochs_run")
    result["lightning"].update(facts)
    if trainer.is_global_zero:
        write_result(out_dir, result)
        if result["status"] != "completed":  # a job's log says why, not only result.json
            log.error("run %s failed: %s (%s)", cfg.run_id, result["error"], out_dir / "result.json")
    # The result is on disk before W&B's finish, which can hang or be killed; the teardown is then
    # measured and the result written again with it (attempts.json too)
    torn_down = time.perf_counter()
    _finish(trainer, keep_process_group=keep_process_group)
    clock.teardown_seconds = time.perf_counter() - torn_down
    attempts.record_timing(clock.block())
    result.update(attempts.totals())
    if trainer.is_global_zero:
        write_result(out_dir, result)
    return result


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


def _write_failure(out_dir: Path, result: dict[str, Any]) -> None:
    """The failed result, or one clear line when even that cannot be written (a full disk)."""
    try:
        write_result(out_dir, result)
    except OSError as again:
        log.error(
            "%s; %s could not be written either (%s)", result["error"], out_dir / "result.json", again.strerror or again
        )


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


def _fit_facts(trainer: pl.Trainer, cfg: TrainConfig) -> dict[str, Any]:
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
        "global_step": trainer.global_step,
    }


def _evaluate(
    trainer: pl.Trainer, module: CifarResNet, datamodule: CifarDataModule, cfg: TrainConfig, facts: dict[str, Any]
) -> dict:
    """Test accuracy of the weights the run stands for: SWA's average, else the best-val checkpoint."""
    if cfg.tricks.swa:
        weights, ckpt_path = "swa", None
        trainer.save_checkpoint(output_dir(cfg) / "checkpoints" / "swa.ckpt")
    else:
        weights, ckpt_path = "best", facts["best_checkpoint"]
    metrics = trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)[0]
    return {"test_acc": float(metrics["test_acc"]), "test_weights": weights}


def _describe(cfg, trainer, clock, callbacks, out_dir, data_kind, runtime, attempts) -> dict[str, Any]:
    """What the run was and did; its cost (``wall_s``, ``gpu_hours``, ...) sums every attempt (``AttemptLog.totals``)."""
    finder = next((c for c in callbacks if isinstance(c, LrFinderThenReschedule)), None)
    return {
        "config": cfg.to_dict(),
        "data": data_kind,
        "data_fingerprint": cfg.data.fingerprint,
        **{
            key: value
            for key, value in telemetry.summarize(out_dir).items()
            if key in ("gpu_util_mean", "gpu_util_p95", "gpu_mem_peak_mib")
        },
        "lr_found": finder.lr_found if finder is not None else None,
        "lr_find_warning": finder.warning if finder is not None else None,
        "tricks": enabled_tricks(cfg),
        "resolutions": resolutions(cfg),
        "lightning": {
            "accumulation_by_epoch": {str(k): v for k, v in sorted(clock.accumulation_by_epoch.items())},
            "gradient_clip_val": trainer.gradient_clip_val,
            "precision": runtime.precision,
            "accelerator": runtime.accelerator,
            "channels_last": runtime.channels_last,
        },
        "world_size": trainer.world_size,
        "requeues": _requeues(),
        "hosts": _hosts(),
        "versions": {
            "torch": torch.__version__,
            "lightning": lightning.__version__,
            "cifar_hpc": cifar_hpc.__version__,
            "git_commit": _git_commit(),
            "python": sys.version.split()[0],
        },
        "started_at": attempts.all[0].started_at,
        "finished_at": attempts.current.ended_at,
    }


def _cluster_plugins() -> list:
    if SLURMEnvironment.detect():
        # a process of a shared GPU (pack.run_shared) leaves the requeue to its parent's submitit
        auto_requeue = os.environ.get(signals.REQUEUE_BY_PARENT) != "1"
        return [SLURMEnvironment(auto_requeue=auto_requeue, requeue_signal=signals.REQUEUE_SIGNAL)]
    return []


def _requeues() -> int:
    """How many times Slurm restarted this job (preemption, timeout, node failure)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)


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


def _hosts() -> list[str]:
    """Host names of every process, gathered when a process group exists."""
    name = telemetry.host_name()  # Slurm's node name where set: simulated nodes share one host
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        names: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(names, name)
        return sorted(set(names))
    return [name]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(Path(cifar_hpc.__file__).parent), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _finish(trainer: pl.Trainer, *, keep_process_group: bool = False) -> None:
    """Close W&B and the process group (unless the next run of a pack reuses it): CPU DDP runs abort
    at exit (134) when the group is left up."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and trainer.is_global_zero:
            logger.experiment.finish()
            # finish() can return before the offline .wandb file is complete; teardown waits for it
            import wandb

            wandb.teardown()
    if not keep_process_group and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
