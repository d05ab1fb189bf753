"""Several runs in one set of processes (``cifar-hpc submit --pack N``): start-up paid once.

One array task trains its runs one after another in the same processes (one per GPU under
``srun``, as for a single run). What the runs can share is set up once: the imports, CUDA and the
DDP process group (Lightning reuses one that is already initialised; it is destroyed after the
last run), the staged and loaded data (``train.load_arrays`` keeps the last one), torch.compile's
caches. Each run still gets its own folder, ``result.json``, checkpoints, CSV log and W&B run
(finished before the next starts) and its own seed (``seed_everything`` as it starts): exactly the
result it would have had alone.

What a pack survives is what a run survives:

* a requeue (preemption, time limit, node failure) runs the same list again: completed runs
  return at once from their ``result.json``, the interrupted one resumes from its checkpoint;
* a run that fails (NaN loss, an error) is recorded failed in its ``result.json`` by ``train.run``
  and the next run starts; a mistake in one run's set-up (``UserError``) is logged and skipped;
* a stop from outside (SIGTERM, submitit's requeue exit, Ctrl-C) ends the pack: it is the task's.
  A SIGTERM is noticed wherever it strikes (``cifar_hpc.base.signals``): no next run starts in a dying job.

**Several runs on one GPU at once** (``--per-gpu K``, ``run_shared``): for runs that use one GPU and
do not fill it, the task's runs are dealt round-robin to K processes that train side by side on
that GPU, each its share as a pack (CUDA MPS, where the cluster runs it, lets their kernels overlap;
without it the GPU time-slices between them). The requeue stays the task's: the children ignore
Slurm's USR2 and leave Lightning's auto-requeue off (``signals.REQUEUE_BY_PARENT``); when submitit requeues
the task, its children are stopped (SIGTERM: each run keeps its last checkpoint) and all resume.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from cifar_hpc.base import signals
from cifar_hpc.base.errors import Interrupted, Terminated
from cifar_hpc.config.train_config import TrainConfig

log = logging.getLogger(__name__)

PACK_MARKER = "pack: run "
"""Each run's part of a pack's shared log starts with ``pack: run 2 of 4: <run_id>`` (``cifar_hpc.study.run_logs`` cuts it there)."""


def run_pack(
    configs: Sequence[TrainConfig], train: Callable[..., dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Train ``configs`` one after another in this process; one outcome per run, in order."""
    import torch

    from cifar_hpc.base import console

    console.configure()  # a Slurm job's process never went through the CLI: before the first line below
    if train is None:
        from cifar_hpc.training.train import run as train

    outcomes: list[dict[str, Any]] = []
    try:
        with signals.watching():
            return _train_each(configs, train, outcomes)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()  # CPU DDP aborts at exit (134) when left up


def _train_each(
    configs: Sequence[TrainConfig], train: Callable[..., dict[str, Any]], outcomes: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    for index, cfg in enumerate(configs):
        if signals.received():  # the job is going away: what is left resumes when it comes back
            raise Terminated(f"pack stopped by SIGTERM before run {index + 1} of {len(configs)} ({cfg.run_id})")
        log.info("%s%d of %d: %s", PACK_MARKER, index + 1, len(configs), cfg.run_id)
        wandb_mode = os.environ.get("WANDB_MODE")
        try:
            outcomes.append(train(cfg, keep_process_group=True))
        except Interrupted:
            raise
        except Exception as error:  # noqa: BLE001 - recorded (train.run wrote it), the pack goes on
            log.error("pack: run %s failed (%s: %s); going on with the next", cfg.run_id, type(error).__name__, error)
            outcomes.append({"run_id": cfg.run_id, "status": "failed", "error": f"{type(error).__name__}: {error}"})
        finally:
            # Lightning's WandbLogger sets WANDB_MODE=dryrun for the whole process once a run is
            # offline: the next run of the pack decides for itself
            if wandb_mode is None:
                os.environ.pop("WANDB_MODE", None)
            else:
                os.environ["WANDB_MODE"] = wandb_mode
    return outcomes


def run_shared(configs: Sequence[TrainConfig], per_gpu: int) -> list[dict[str, Any]]:
    """Train ``configs`` as ``per_gpu`` packs side by side, one process each, on this task's GPU
    (or CPU); one outcome per run, read from its ``result.json``."""
    import multiprocessing

    from cifar_hpc.training.results import read_result
    from cifar_hpc.training.run_folder import output_dir

    if per_gpu <= 1 or len(configs) <= 1:
        return run_pack(configs)
    streams = [list(configs[start::per_gpu]) for start in range(min(per_gpu, len(configs)))]
    context = multiprocessing.get_context("spawn")  # no CUDA state or threads inherited from this process
    children = [
        context.Process(target=_stream, args=(stream,), name=f"cifar-hpc-share-{i}") for i, stream in enumerate(streams)
    ]
    os.environ[signals.REQUEUE_BY_PARENT] = "1"
    try:
        for child in children:
            child.start()
        for child in children:
            child.join()
    finally:
        os.environ.pop(signals.REQUEUE_BY_PARENT, None)
        for child in children:  # a requeue or an error here: stop the others, each keeps its checkpoints
            if child.is_alive():
                child.terminate()
        for child in children:
            child.join(timeout=60)
    outcomes = []
    for cfg in configs:
        result = read_result(output_dir(cfg))
        outcomes.append(result or {"run_id": cfg.run_id, "status": "failed", "error": "its process wrote no result"})
    return outcomes


def _stream(configs: list[TrainConfig]) -> None:
    """One process of ``run_shared``: Slurm's USR2 is the parent's business (submitit requeues)."""
    import signal

    signal.signal(signals.REQUEUE_SIGNAL, signal.SIG_IGN)
    run_pack(configs)
