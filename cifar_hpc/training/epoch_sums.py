"""The training epoch's loss, accuracy and non-finite check, kept on the device and read once per epoch.

On a GPU the host queues kernels ahead of the device. Any read of a device value inside a training
step (``.item()``, ``bool(tensor)``, a per-step ``self.log(..., prog_bar=True)``, a torchmetrics
``compute``) makes the host wait until the GPU has caught up, and every microsecond of Python until the
next step's kernels are queued is then idle GPU time (-28% measured on an H200). So a step only
writes two numbers into preallocated device vectors, indexed by the step's place in the epoch (five
tiny kernels, no read): its loss times its images and its correct predictions. The batch sizes and global steps are
host ints (shapes and counters are known without the device).

The vectors are read at the epoch's last batch: one read per epoch, every rank together (under DDP a
rank that stopped alone would leave the others waiting in their next all-reduce). A NaN/inf loss is
found there, with the step it happened at, so the run still fails with it. On CUDA a non-blocking copy
into pinned host memory also lets the host see the running loss of a few steps ago without waiting
(``peek``): a single-process run stops within a few steps of a NaN, and a terminal's progress bar
shows the loss, with no read in the step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class EpochStats:
    """One training epoch over every rank: mean loss, accuracy (a fraction), images, and the first
    global step whose loss was not finite with that loss (None, None: there was none)."""

    loss: float | None
    acc: float | None
    images: int
    nonfinite_step: int | None
    nonfinite_loss: float | None


class EpochSums:
    """Per-step device records of one training epoch (see the module docstring)."""

    def __init__(self, device: torch.device, steps: int = 64) -> None:
        """``steps``: the batches expected in the epoch (the vectors grow if there are more)."""
        self.device = device
        self._loss = torch.zeros(max(1, steps), device=device)  # each step's loss x its images
        self._correct = torch.zeros(max(1, steps), device=device, dtype=torch.long)
        self.sizes: list[int] = []
        self.global_steps: list[int] = []
        self._host: torch.Tensor | None = None
        self._landed: torch.cuda.Event | None = None
        self._copied_images = 0
        self._peeked: tuple[float | None, int | None] = (None, None)

    def state_dict(self) -> dict[str, Any]:
        """The epoch so far, for a checkpoint saved in its middle (saving reads the device anyway)."""
        count = len(self.sizes)
        return {
            "loss": self._loss[:count].cpu(),
            "correct": self._correct[:count].cpu(),
            "sizes": list(self.sizes),
            "global_steps": list(self.global_steps),
        }

    @classmethod
    def from_state(cls, device: torch.device, state: dict[str, Any], steps: int = 64) -> EpochSums:
        """The sums of a checkpoint's epoch, to go on with after a resume in its middle."""
        sums = cls(device, max(steps, len(state["sizes"])))
        count = len(state["sizes"])
        sums._loss[:count] = state["loss"].to(device)
        sums._correct[:count] = state["correct"].to(device)
        sums.sizes, sums.global_steps = list(state["sizes"]), list(state["global_steps"])
        return sums

    @property
    def images(self) -> int:
        return sum(self.sizes)

    def add(self, loss: torch.Tensor, log_probs: torch.Tensor, labels: torch.Tensor, step: int) -> None:
        """One training batch: ``loss`` its mean NLL, ``log_probs`` (N, 10), ``step`` the global step."""
        index = len(self.sizes)
        if index == len(self._loss):  # more batches than expected (an LR-finder sweep): double, rarely
            self._loss = torch.cat([self._loss, torch.zeros_like(self._loss)])
            self._correct = torch.cat([self._correct, torch.zeros_like(self._correct)])
        self._loss[index] = loss.detach() * labels.shape[0]  # a host int: a kernel argument, no copy
        self._correct[index] = (log_probs.detach().argmax(dim=1) == labels).sum()
        self.sizes.append(int(labels.shape[0]))
        self.global_steps.append(step)

    def _totals(self) -> torch.Tensor:
        """[loss x images, correct, images, index of the first non-finite loss or -1, that loss] (device)."""
        count = len(self.sizes)
        losses = self._loss[:count]  # each step's loss x its images
        bad = ~torch.isfinite(losses)
        first_bad = torch.where(bad.any(), bad.int().argmax(), -1) if count else losses.new_tensor(-1)
        return torch.stack(
            [
                losses.sum(),
                self._correct[:count].sum().to(losses.dtype),
                torch.full((), float(self.images), device=self.device),  # a fill: no host-to-device copy
                first_bad.to(losses.dtype),
                losses[first_bad.clamp(min=0)] if count else losses.new_tensor(0.0),
            ]
        )

    def peek(self) -> tuple[float | None, int | None]:
        """The running mean loss and the first non-finite global step as of a few steps ago, without
        waiting for the device (CUDA: a pinned, non-blocking copy, taken again once the previous one
        has landed; elsewhere ``(None, None)``: the epoch's end reads them)."""
        if self.device.type != "cuda" or not self.sizes:
            return None, None
        if self._host is None:
            self._host = torch.empty(5, pin_memory=True)
            self._landed = torch.cuda.Event()
        elif self._landed.query():  # the previous copy has landed: reading host memory waits for nothing
            loss_sum, _, images, first_bad, _ = self._host.tolist()
            step = self.global_steps[int(first_bad)] if first_bad >= 0 else None
            self._peeked = (loss_sum / images if images else None, step)
        else:
            return self._peeked
        self._host.copy_(self._totals(), non_blocking=True)
        self._landed.record()
        return self._peeked

    def read(self, reduce: Callable[[torch.Tensor, str], torch.Tensor]) -> EpochStats:
        """The epoch over every rank, in one read; ``reduce(tensor, op)`` is the strategy's all-reduce
        (``op``: "sum" or "max"). Every rank runs the same global steps, so the latest first bad step
        of any rank is one at which the run broke."""
        totals = self._totals()
        steps = totals.new_tensor(self.global_steps or [-1])
        first_bad_step = torch.where(totals[3] >= 0, steps[totals[3].clamp(min=0).long()], -1.0).reshape(1)
        summed = reduce(totals[:3].clone(), "sum")
        latest_bad = reduce(first_bad_step.clone(), "max")
        values = torch.cat([summed, latest_bad, first_bad_step, totals[4:]]).tolist()
        loss_sum, correct, images, step, own_step, own_loss = values
        return EpochStats(
            loss=loss_sum / images if images else None,
            acc=correct / images if images else None,
            images=int(images),
            nonfinite_step=int(step) if step >= 0 else None,
            nonfinite_loss=own_loss if step >= 0 and own_step == step else None,  # else: another rank's
        )
