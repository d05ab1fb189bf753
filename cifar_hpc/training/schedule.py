"""Learning-rate schedules as pure functions of the optimizer step.

Torch's ``OneCycleLR`` raises once it is stepped past ``total_steps``; with a scheduled gradient
accumulation, SWA taking over the last epochs, and Lightning's extra optimizer step on an epoch's
leftover batches, an off-by-one there would kill a run hours in. A ``LambdaLR`` over these clamped
functions cannot overrun, and the step count is computed exactly by :func:`optimizer_steps`.
"""

import math


def lr_factor(step: int, total_steps: int, kind: str, warmup_fraction: float = 0.25) -> float:
    """Multiplier of the peak LR at optimizer step ``step`` (0-based) of ``total_steps``.

    ``onecycle``: linear warm-up from 1/25 of the peak over the first ``warmup_fraction`` of the
    steps, then cosine decay to 1e-4 of the peak (torch's OneCycleLR shape, linear warm-up).
    ``cosine``: cosine decay from the peak to 0. ``constant``: 1. Past the end the last value holds.
    """
    if kind == "constant" or total_steps <= 0:
        return 1.0
    progress = min(step, total_steps) / total_steps
    if kind == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if kind == "onecycle":
        start, end = 1 / 25, 1e-4
        if progress < warmup_fraction:
            return start + (1 - start) * progress / warmup_fraction
        decay = (progress - warmup_fraction) / (1 - warmup_fraction)
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * decay))
    raise ValueError(f"unknown schedule {kind!r}")


def accumulation_factor(epoch: int, schedule: dict[int, int]) -> int:
    """The factor in force at ``epoch`` for a schedule of {first epoch: factor} (1 when empty)."""
    factor = 1
    for start in sorted(schedule):
        if epoch >= start:
            factor = schedule[start]
    return factor


def optimizer_steps(batches_per_epoch: int, epochs: int, schedule: dict[int, int]) -> int:
    """Optimizer steps in ``epochs`` epochs: Lightning steps after every ``factor`` batches and once
    more on an epoch's leftover batches, so each epoch takes ceil(batches / factor) steps."""
    return sum(math.ceil(batches_per_epoch / accumulation_factor(e, schedule)) for e in range(epochs))
