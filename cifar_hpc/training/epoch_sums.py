"""The training epoch's loss, accuracy and non-finite check, kept on the device and read once per epoch.

On a GPU the host queues kernels ahead of the device. Any read of a device value inside a training
step (``.item()``, ``bool(tensor)``, a per-step ``self.log(..., prog_bar=True)``, a torchmetrics
``compute``) makes the host wait until the GPU has caught up, and every microsecond of Python until the
next step's kernels are queued is then idle GPU time (-28% measured on an H200). So a step only adds to
one small device tensor (a dozen tiny kernels, no read):

* the loss summed over images and the correct predictions (the images are a host int: shapes are known);
* the first step whose loss was NaN/inf (``-1`` while there is none) and that loss, so that the run
  still fails with the step it broke at.

They are read at the epoch's last batch: one read per epoch, every rank together (under DDP a rank
that stopped alone would leave the others waiting in their next all-reduce). On CUDA a non-blocking
copy into pinned host memory also lets the host see the values of a few steps ago without waiting
(``peek``): a single-process run stops within a few steps of a NaN, and a terminal's progress bar
shows the running loss, with no read in the step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

_LOSS, _CORRECT, _FIRST_BAD, _BAD_LOSS = range(4)


@dataclass(frozen=True)
class EpochStats:
    """One training epoch over every rank: mean loss, accuracy (a fraction), images, and the first
    step whose loss was not finite with that loss (None, None: there was none)."""

    loss: float | None
    acc: float | None
    images: int
    nonfinite_step: int | None
    nonfinite_loss: float | None


class EpochSums:
    """Device-side sums of one training epoch (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        # float32: exact for counts and steps below 2**24, and every device has it (MPS has no float64)
        self._sums = torch.tensor([0.0, 0.0, -1.0, 0.0], device=device)
        self.images = 0
        self._host: torch.Tensor | None = None
        self._landed: torch.cuda.Event | None = None
        self._copied_images = 0
        self._peeked: tuple[float | None, int | None] = (None, None)

    def add(self, loss: torch.Tensor, log_probs: torch.Tensor, labels: torch.Tensor, step: int) -> None:
        """One training batch: ``loss`` its mean NLL, ``log_probs`` (N, 10), ``step`` the global step."""
        loss = loss.detach().float()
        correct = (log_probs.detach().argmax(dim=1) == labels).sum().float()
        first = (self._sums[_FIRST_BAD] < 0) & ~torch.isfinite(loss)
        self._sums = torch.stack(
            [
                self._sums[_LOSS] + loss * labels.shape[0],
                self._sums[_CORRECT] + correct,
                torch.where(first, torch.full_like(loss, step), self._sums[_FIRST_BAD]),
                torch.where(first, loss, self._sums[_BAD_LOSS]),
            ]
        )
        self.images += int(labels.shape[0])

    def peek(self) -> tuple[float | None, int | None]:
        """The running mean loss and the first non-finite step as of a few steps ago, without waiting
        for the device (CUDA: a pinned, non-blocking copy, taken again once the previous one has landed;
        elsewhere ``(None, None)``: the epoch's end reads them)."""
        if self.device.type != "cuda":
            return None, None
        if self._host is None:
            self._host = torch.empty(4, pin_memory=True)
            self._landed = torch.cuda.Event()
        elif self._landed.query():  # the previous copy has landed: reading host memory waits for nothing
            loss_sum, _, first_bad, _ = self._host.tolist()
            images = self._copied_images
            self._peeked = (loss_sum / images if images else None, int(first_bad) if first_bad >= 0 else None)
        else:
            return self._peeked
        self._host.copy_(self._sums, non_blocking=True)
        self._landed.record()
        self._copied_images = self.images
        return self._peeked

    def read(self, reduce: Callable[[torch.Tensor, str], torch.Tensor]) -> EpochStats:
        """The epoch over every rank, in one read; ``reduce(tensor, op)`` is the strategy's all-reduce
        (``op``: "sum" or "max"). Global steps are the same on every rank, so the latest first bad
        step of any rank is one at which the run broke."""
        totals = reduce(
            torch.stack([self._sums[_LOSS], self._sums[_CORRECT], self._sums.new_tensor(self.images)]), "sum"
        )
        first_bad = reduce(self._sums[_FIRST_BAD : _FIRST_BAD + 1].clone(), "max")
        values = torch.cat([totals, first_bad, self._sums[_FIRST_BAD:]]).tolist()
        loss_sum, correct, images, step, own_step, own_loss = values
        return EpochStats(
            loss=loss_sum / images if images else None,
            acc=correct / images if images else None,
            images=int(images),
            nonfinite_step=int(step) if step >= 0 else None,
            nonfinite_loss=own_loss if step >= 0 and own_step == step else None,  # else: another rank's
        )
