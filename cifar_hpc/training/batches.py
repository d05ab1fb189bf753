"""Which images each training step sees, in which order, and where a resumed run picks up.

One batch sampler for both loaders (``ShardBatches``): the order of epoch ``e`` is torch's
``DistributedSampler`` seeded by ``seed + e`` (each rank its shard), the last partial batch dropped.
Each batch carries its place in the run (``BatchIndices``), so that augmentation is seeded from the run's
seed and that place (``augment_seed``), not drawn from a stream that runs on from wherever the process
started. ``ResumableLoader`` is what Lightning saves in a checkpoint and restores (the epoch and the
batches trained), so a resumed run, from an epoch's end or its middle, trains exactly the batches
that the uninterrupted run trains.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler


def per_rank_batches(n: int, world_size: int, per_device_batch: int) -> int:
    """Full batches each rank sees per epoch: the data is padded to a multiple of the world size
    (as DistributedSampler does) and the last partial batch is dropped, so every step has the
    same global batch."""
    return math.ceil(n / world_size) // per_device_batch


class BatchIndices(NamedTuple):
    """What the batch sampler hands a dataset: which images, and where in the run they are drawn, so
    that their augmentation is a function of the run's seed and that place, whoever draws it (a
    worker process, a resumed run)."""

    epoch: int
    number: int
    """The batch's place in its epoch (on its rank)."""
    indices: torch.Tensor


def augment_seed(seed: int, epoch: int, key: int) -> int:
    """The seed of one augmentation draw: the run's seed, the epoch and ``key`` (an image's index on the
    torchvision path, a batch's place and rank on the device path) mixed into 63 bits."""
    return int(np.random.SeedSequence([seed, epoch, key]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class ShardBatches(Sampler[BatchIndices]):
    """A batch sampler: one rank's batches of one epoch, as ``BatchIndices`` (index tensors on a device, with their place).

    The order is torch's own ``DistributedSampler`` (the permutation of epoch ``e`` seeded by
    ``seed + e``, padded to a multiple of the world size, rank ``r`` taking every ``world_size``-th
    index), so the ranks see disjoint shards of one epoch ordering. It is this object's ``sampler``,
    where Lightning looks for ``set_epoch`` (``dataloader.batch_sampler.sampler``) at every epoch.
    The order is made (by DistributedSampler, in Python) and copied to the device once per epoch; each
    batch is a slice of it: no Python work per image in a step, no host-device copy per step.
    Training drops the last partial batch. ``resume`` starts the next pass part-way (a resumed run).
    """

    def __init__(
        self,
        n: int,
        *,
        batch_size: int,
        train: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
    ) -> None:
        self.sampler = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=train, seed=seed)
        self.n, self.batch_size, self.train = n, batch_size, train
        self.world_size, self.device = world_size, torch.device(device)
        self._resume: tuple[int, int] | None = None

    def __len__(self) -> int:
        if self.train:
            return per_rank_batches(self.n, self.world_size, self.batch_size)
        return math.ceil(len(self.sampler) / self.batch_size)

    def resume(self, epoch: int, trained: int) -> None:
        """The next pass continues epoch ``epoch`` after its first ``trained`` batches (all of them:
        the next epoch from its start). Lightning may set the same epoch again before it starts."""
        if trained >= len(self):
            epoch, trained = epoch + 1, 0
        self.sampler.set_epoch(epoch)
        self._resume = (epoch, trained)

    def __iter__(self):
        # a generator: this runs at the first batch, after Lightning set the epoch (it may call iter() before)
        epoch = self.sampler.epoch
        start = self._resume[1] if self._resume is not None and self._resume[0] == epoch else 0
        self._resume = None
        order = torch.tensor(list(self.sampler), dtype=torch.long).to(self.device)  # (n / world_size,), once per epoch
        for b in range(start, len(self)):
            yield BatchIndices(epoch, b, order[b * self.batch_size : (b + 1) * self.batch_size])


class ResumableLoader(DataLoader):
    """A DataLoader over ``ShardBatches`` that Lightning saves and restores with the run's checkpoints
    (it looks for ``state_dict``/``load_state_dict`` on the training loader): where in the run the next
    batch is. ``trained()`` says how many batches of the current epoch were trained when it is saved
    (Lightning's own progress count, not what the loader has prefetched)."""

    def __init__(self, *args: Any, trained: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trained = trained

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.batch_sampler.sampler.epoch, "trained": self.trained()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.resume(int(state["epoch"]), int(state["trained"]))
