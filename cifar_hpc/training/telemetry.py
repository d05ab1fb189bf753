"""GPU telemetry during a fit: a Lightning callback that samples every GPU of the job, on every node.

W&B's own system monitor only sees the node of global rank 0, needs the network and is rate
limited, so we sample NVML ourselves. On each node, local rank 0 runs a ``gpu_monitor.Sampler``
daemon thread that every ``interval_s`` reads all of the job's GPUs on that node into
``<out_dir>/gpu.node<NODE_RANK>.jsonl`` (the file layout, which GPUs belong to the job and how the
files are read back are in ``gpu_monitor.py``, which does not import Lightning). This assumes local
rank 0 sees all GPUs of its node, as with Lightning's one-task-per-GPU launch under ``srun`` with no
per-task GPU binding (``--gpu-bind``/``--gpus-per-task`` would hide the others; the callback warns
when it sees fewer GPUs than the node trains on).

Global rank 0 also forwards its node's latest sample per GPU to the Lightning logger(s) as
``gpu/<index>/<field>``, at most once per interval, from the training loop thread (loggers such as
W&B are not meant to be called from another thread).

When NVML cannot start (no NVIDIA driver or library, e.g. a CPU laptop or CI), the callback logs
one line and does nothing; telemetry never fails training.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.accelerators import CUDAAccelerator

# host_name and summarize are re-exported for train.py, which knows telemetry as one module
from cifar_hpc.training.gpu_monitor import (
    GpuReader,
    NvmlReader,
    NvmlUnavailable,
    Sampler,
    host_name,
    node_file,
    summarize,
)

__all__ = ["LOGGED_FIELDS", "GpuTelemetry", "host_name", "summarize"]

log = logging.getLogger(__name__)

LOGGED_FIELDS = ("util_pct", "mem_used_mib", "power_w", "temp_c", "sm_clock_mhz")


class GpuTelemetry(Callback):
    """Sample the job's GPUs on every node into ``<out_dir>/gpu.node<N>.jsonl`` (see module doc).

    ``reader_factory(node_rank=...)`` returns an object with ``read() -> list[GpuSample]`` and
    ``close()``, or raises ``NvmlUnavailable``; tests pass a fake one.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        interval_s: float = 1.0,
        reader_factory: Callable[..., GpuReader] = NvmlReader,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.out_dir = Path(out_dir)
        self.interval_s = interval_s
        self.reader_factory = reader_factory
        self._sampler: Sampler | None = None
        self._unavailable = False  # NVML failed once: say so once, never retry
        self._last_logged = -math.inf

    def path_for(self, node_rank: int) -> Path:
        return node_file(self.out_dir, node_rank)

    # start ------------------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._start(trainer)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer)  # no-op when setup() already started it

    def _start(self, trainer: Trainer) -> None:
        if self._sampler is not None or self._unavailable or trainer.local_rank != 0:
            return
        try:
            reader = self.reader_factory(node_rank=trainer.node_rank)
        except NvmlUnavailable as e:
            self._unavailable = True
            on_gpu = isinstance(trainer.accelerator, CUDAAccelerator)
            log.log(  # on a GPU a missing NVML is news; on CPU it is expected, not worth a line per run
                logging.WARNING if on_gpu else logging.DEBUG,
                "NVML not available (no NVIDIA driver): no GPU telemetry recorded (%s)",
                e,
            )
            return
        sampler = Sampler(reader, self.path_for(trainer.node_rank), self.interval_s)
        try:
            first = sampler.start()
        except Exception as e:  # noqa: BLE001 (unwritable out_dir, a reader bug: never fail training)
            log.warning("GPU telemetry disabled: %s: %s", type(e).__name__, e)
            sampler.stop(timeout_s=0)
            return
        self._sampler = sampler
        devices_here = trainer.num_devices if isinstance(trainer.accelerator, CUDAAccelerator) else 0
        if len(first) < devices_here:
            log.warning(
                "GPU telemetry sees %d GPU(s) but this node trains on %d: per-task GPU binding "
                "(CUDA_VISIBLE_DEVICES=%s) hides the others from local rank 0",
                len(first),
                devices_here,
                os.environ.get("CUDA_VISIBLE_DEVICES"),
            )

    # forward to the logger (training loop thread, global rank 0 only) ---------------------------
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._sampler is None or trainer.global_rank != 0 or not trainer.loggers:
            return
        now = time.monotonic()
        if now - self._last_logged < self.interval_s:
            return
        self._last_logged = now
        metrics = {
            f"gpu/{s.gpu}/{name}": value
            for s in self._sampler.latest.values()
            for name in LOGGED_FIELDS
            if (value := getattr(s, name)) is not None
        }
        if metrics:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)

    # stop ---------------------------------------------------------------------------------------
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.stop()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.stop()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop and join the sampler thread (idempotent)."""
        sampler, self._sampler = self._sampler, None
        if sampler is not None:
            sampler.stop(timeout_s=max(5.0, 2 * self.interval_s))
