"""Where a training step reads a tensor's value back to the host: counted on any device, CPU included.

A read (``.item()``, ``.tolist()``, ``bool(t)``, ``float(t)``, ``int(t)``, formatting, ``.numpy()``) of
a GPU tensor makes the host wait for the GPU; between two steps that is idle GPU time. On the GPU
``torch.cuda.set_sync_debug_mode("warn")`` names such points, but only on CUDA, and it also warns
about itself. This counter works anywhere, so the CPU tests and benchmarks can hold the line: a
``TorchFunctionMode`` sees every tensor method call and counts the reading ones, with the first
frame outside torch and Lightning that asked (``file:line``, what a fix needs).

``ReadsPerStep`` (a Lightning callback) opens the window at a batch's ``on_train_batch_start`` and
closes it at the next one: the window is the whole step, Lightning's end-of-batch work (logger
connector, progress bar, LR schedulers) included. The last batch of each epoch is counted apart
(``epoch_end_reads``): one read per epoch there is allowed.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from torch.overrides import TorchFunctionMode

READS = frozenset({"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "__format__", "numpy"})
"""Tensor methods that hand a value to Python: on a GPU each one waits for the device."""

_LIBRARY_PARTS = ("/torch/", "/torchmetrics/", "/lightning/", "/lightning_utilities/", "/host_reads.py")
_LOADER_PART = "/torch/utils/data/"
"""A DataLoader's per-image CPU work (torchvision's random parameters): in worker processes on a real run,
and never of a device tensor, so not counted."""


def _short(path: str) -> str:
    return path.split("site-packages/")[-1] if "site-packages/" in path else "/".join(path.split("/")[-2:])


def _asker() -> str | None:
    """``file:line`` of the innermost frame outside torch, Lightning and this module (else the innermost);
    None for a read inside a DataLoader's fetch."""
    frame = sys._getframe(2)
    innermost = asker = None
    while frame is not None:
        name = frame.f_code.co_filename
        if _LOADER_PART in name:
            return None
        innermost = innermost or f"{_short(name)}:{frame.f_lineno}"
        if asker is None and not any(part in name for part in _LIBRARY_PARTS):
            asker = f"{_short(name)}:{frame.f_lineno}"
        frame = frame.f_back
    return asker or innermost or "?"


class ReadCounter(TorchFunctionMode):
    """Counts reads of tensor values while active (``with ReadCounter() as c:`` or ``start``/``stop``)."""

    def __init__(self) -> None:
        super().__init__()
        self.places: Counter[str] = Counter()
        self.active = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", None) in READS and (asker := _asker()) is not None:
            self.places[asker] += 1
        return func(*args, **(kwargs or {}))

    @property
    def reads(self) -> int:
        return sum(self.places.values())

    def start(self) -> None:
        if not self.active:
            self.__enter__()
            self.active = True

    def stop(self) -> None:
        if self.active:
            self.__exit__(None, None, None)
            self.active = False


class ReadsPerStep(Callback):
    """Reads per training step, the whole step in the window (see the module docstring).

    ``step_reads``: per step that is not an epoch's last, the places and counts; ``epoch_end_reads``:
    the same for each epoch's last step (its end-of-epoch reads, e.g. the epoch's loss, are allowed)."""

    def __init__(self) -> None:
        self.step_reads: list[Counter[str]] = []
        self.epoch_end_reads: list[Counter[str]] = []
        self._counter: ReadCounter | None = None

    def _close(self, into: list[Counter[str]]) -> None:
        if self._counter is not None:
            self._counter.stop()
            into.append(self._counter.places)
            self._counter = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int):
        self._close(self.step_reads)  # the previous step ends where this one starts
        self._counter = ReadCounter()
        self._counter.start()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close(self.epoch_end_reads)  # validation follows the epoch's last step

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close(self.epoch_end_reads)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close(self.epoch_end_reads)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._close(self.epoch_end_reads)

    def summary(self) -> dict[str, Any]:
        """Counts for a benchmark's JSON: reads per step and where they came from."""
        places: Counter[str] = Counter()
        for step in self.step_reads:
            places.update(step)
        steps = len(self.step_reads)
        return {
            "steps_counted": steps,
            "reads_per_step": round(sum(places.values()) / steps, 3) if steps else None,
            "read_places": dict(places.most_common()),
            "epoch_end_reads": [sum(c.values()) for c in self.epoch_end_reads],
        }
