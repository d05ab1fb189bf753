"""Two ways to feed CIFAR-10 to the model, with the same augmentations in distribution.

``torchvision``: a DataLoader whose workers apply per-image ``transforms.v2`` (crop, flip, rotation,
normalisation). The usual way; CPU-bound at GPU speeds.

``device``: the whole uint8 dataset (50k×3×32×32 = 150 MB) lives on the training device and each
batch is augmented at once with tensor ops (the airbench way): a gather for the crop, a ``where``
for the flip, one ``grid_sample`` for the rotation. No workers, no host-to-device copies per step.
It is an ordinary DataLoader (``device_loader``): a batch sampler of index tensors (``ShardBatches``,
sharded by torch's DistributedSampler) over a dataset whose ``__getitems__`` augments a whole batch.

Both draw their batches from ``cifar_hpc.training.batches`` (one order per epoch, seeded augmentation,
a loader Lightning resumes exactly), so a resumed run trains what the uninterrupted run trains.

Both apply, in order: random crop of the zero-padded image, horizontal flip (p=0.5), rotation by
U(-d, d) degrees with nearest-neighbour sampling and zero fill (torchvision's defaults), then
normalisation with CIFAR-10's channel statistics.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from cifar_hpc.base.errors import UserError
from cifar_hpc.config.train_config import AugmentConfig, TrainConfig, check_batch_split
from cifar_hpc.data.cifar_files import CifarArrays
from cifar_hpc.training.batches import BatchIndices, ResumableLoader, ShardBatches, augment_seed, per_rank_batches

# Per-channel mean and std of CIFAR-10's 50k training images, in [0, 1] units.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def split_train_val(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and validation images: a permutation fixed by the run's seed, so
    runs that differ only in their tricks validate on the same images."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(n * val_fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def default_workers() -> int:
    """One worker per CPU this process may use, leaving one for the training loop, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(0, min(8, cpus - 1))


# --- torchvision path ---------------------------------------------------------------------------


def torchvision_transform(aug: AugmentConfig, *, train: bool) -> v2.Compose:
    steps: list = []
    if train and aug.crop:
        steps.append(v2.RandomCrop(32, padding=aug.crop_padding, fill=0))
    if train and aug.flip:
        steps.append(v2.RandomHorizontalFlip())
    if train and aug.rotate:
        steps.append(v2.RandomRotation(aug.rotate_degrees, interpolation=v2.InterpolationMode.NEAREST, fill=0))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if aug.normalize:
        steps.append(v2.Normalize(CIFAR10_MEAN, CIFAR10_STD))
    return v2.Compose(steps)


class ImageDataset(Dataset):
    """uint8 images (N, 3, 32, 32) and labels, transformed per item in the DataLoader's workers.

    With a ``seed`` (training), each image's random transform is drawn from ``augment_seed(seed, epoch,
    index)`` (torch's global generator, forked for the batch): the same in a worker or not, resumed or not."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: v2.Compose, seed: int | None = None) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index]), self.labels[index]

    def __getitems__(self, batch: BatchIndices) -> list[tuple[torch.Tensor, torch.Tensor]]:
        indices = batch.indices.tolist()  # a CPU tensor, in the loader's worker
        if self.seed is None:
            return [self[index] for index in indices]
        with torch.random.fork_rng(devices=()):  # the process's own stream is left as it was
            items = []
            for index in indices:
                torch.manual_seed(augment_seed(self.seed, batch.epoch, index))
                items.append(self[index])
        return items


# --- device path --------------------------------------------------------------------------------


def augment_batch(images: torch.Tensor, aug: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Augment and normalise a uint8 batch (B, 3, H, W) on its own device; returns float32."""
    batch, _, height, width = images.shape
    device = images.device
    x = images.float().div_(255)
    if aug.crop and aug.crop_padding:
        pad = aug.crop_padding
        padded = F.pad(x, (pad, pad, pad, pad))  # zero fill, as RandomCrop(padding=pad, fill=0)
        dy = torch.randint(0, 2 * pad + 1, (batch,), device=device, generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (batch,), device=device, generator=generator)
        rows = (dy[:, None] + torch.arange(height, device=device))[:, None, :, None]  # (B, 1, H, 1)
        cols = (dx[:, None] + torch.arange(width, device=device))[:, None, None, :]  # (B, 1, 1, W)
        index = torch.arange(batch, device=device)[:, None, None, None]
        channel = torch.arange(3, device=device)[None, :, None, None]
        x = padded[index, channel, rows, cols]  # (B, 3, H, W)
    if aug.flip:
        flip = torch.rand(batch, device=device, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if aug.rotate and aug.rotate_degrees:
        angle = (torch.rand(batch, device=device, generator=generator) * 2 - 1) * math.radians(aug.rotate_degrees)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # affine_grid maps output to input coordinates; square images, so no aspect correction
        theta = torch.stack(
            [torch.stack([cos, -sin, torch.zeros_like(cos)], 1), torch.stack([sin, cos, torch.zeros_like(cos)], 1)], 1
        )  # (B, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    if aug.normalize:
        mean, std = _channel_stats(device)
        x = (x - mean) / std
    return x


@functools.cache
def _channel_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10's mean and std as (1, 3, 1, 1) tensors on ``device``, made once (not a copy per batch)."""
    return (
        torch.tensor(CIFAR10_MEAN, device=device).view(1, 3, 1, 1),
        torch.tensor(CIFAR10_STD, device=device).view(1, 3, 1, 1),
    )


class DeviceImages(Dataset):
    """uint8 images (N, 3, H, W) and labels already on the training device; ``__getitems__`` (what a
    DataLoader with a batch sampler calls) cuts a whole batch with one gather and augments it at once.

    Augmentation randomness comes from a generator on the device, seeded for each batch from the run's
    seed, the epoch, the batch's place and the rank (``augment_seed``; seeding is a host-side call, no
    device work), so the same seed gives bit-identical batches, and a resumed run the same ones."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        aug: AugmentConfig,
        train: bool,
        seed: int,
        rank: int = 0,
        channels_last: bool = False,
    ) -> None:
        self.images, self.labels = images, labels
        # evaluation: normalisation only
        self.aug = aug if train else AugmentConfig(crop=False, flip=False, rotate=False, normalize=aug.normalize)
        self.train, self.seed, self.rank, self.channels_last = train, seed, rank, channels_last
        self.generator: torch.Generator | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, batch: BatchIndices) -> tuple[torch.Tensor, torch.Tensor]:
        if self.train:
            if self.generator is None:
                self.generator = torch.Generator(device=self.images.device)
            self.generator.manual_seed(augment_seed(self.seed, batch.epoch, batch.number * 10_007 + self.rank))
        x = augment_batch(self.images[batch.indices], self.aug, self.generator)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.labels[batch.indices]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.__getitems__(BatchIndices(0, 0, torch.tensor([index], device=self.images.device)))
        return images[0], labels[0]


def device_loader(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int,
    aug: AugmentConfig,
    train: bool,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    channels_last: bool = False,
    trained: Callable[[], int] | None = None,
) -> DataLoader:
    """Batches cut from uint8 tensors already on the training device, augmented on the fly.

    Under DDP the sharding is done here: the Trainer must not put its own DistributedSampler in
    (``use_distributed_sampler=False``, which ``cifar_hpc.training.train`` sets). With ``trained``
    (see ``ResumableLoader``) the loader is resumable."""
    data = DeviceImages(images, labels, aug=aug, train=train, seed=seed, rank=rank, channels_last=channels_last)
    batches = ShardBatches(
        len(labels),
        batch_size=batch_size,
        train=train,
        seed=seed,
        rank=rank,
        world_size=world_size,
        device=images.device,
    )
    # no workers: the data is on the device and a batch is a few tensor ops, queued asynchronously
    if trained is not None:
        return ResumableLoader(data, batch_sampler=batches, collate_fn=_batch_as_is, trained=trained)
    return DataLoader(data, batch_sampler=batches, collate_fn=_batch_as_is)


def _batch_as_is(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The collate function: ``DeviceImages.__getitems__`` already returns the batch."""
    return batch


# --- the DataModule -----------------------------------------------------------------------------


class CifarDataModule(pl.LightningDataModule):
    """Train/val split of the training set (fixed by seed), test set only for the final test_acc."""

    def __init__(
        self, arrays: CifarArrays, cfg: TrainConfig, *, channels_last: bool = False, pin_memory: bool = False
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.channels_last = channels_last
        self.pin_memory = pin_memory
        train_idx, val_idx = split_train_val(len(arrays.train_y), cfg.data.val_fraction, cfg.seed)
        self.train_x, self.train_y = arrays.train_x[train_idx], arrays.train_y[train_idx]
        self.val_x, self.val_y = arrays.train_x[val_idx], arrays.train_y[val_idx]
        self.test_x, self.test_y = arrays.test_x, arrays.test_y
        self.world_size = 1
        self._on_device: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def check_world_size(self, world_size: int) -> None:
        """Refuse a global batch that does not split evenly or does not fit in one epoch."""
        check_batch_split(self.cfg.batch_size, world_size)
        self.world_size = world_size
        if self.batches_per_epoch == 0:
            raise UserError(
                f"batch size {self.cfg.batch_size} is larger than the {len(self.train_y)} training images "
                "(after the validation split): nothing to train on"
            )

    @property
    def per_device_batch(self) -> int:
        return self.cfg.batch_size // self.world_size

    @property
    def batches_per_epoch(self) -> int:
        return per_rank_batches(len(self.train_y), self.world_size, self.per_device_batch)

    def setup(self, stage: str) -> None:
        if self.trainer is not None:
            self.check_world_size(self.trainer.world_size)
        if self.cfg.data.loader == "device" and not self._on_device:
            device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
            for name, (x, y) in {
                "train": (self.train_x, self.train_y),
                "val": (self.val_x, self.val_y),
                "test": (self.test_x, self.test_y),
            }.items():
                self._on_device[name] = (
                    torch.from_numpy(x).to(device),
                    torch.from_numpy(y.astype(np.int64)).to(device),
                )

    def _rank(self) -> int:
        return self.trainer.global_rank if self.trainer is not None else 0

    def _trained_batches(self) -> int:
        """Batches of the current epoch trained so far (what a checkpoint's loader state records)."""
        if self.trainer is None:
            return 0
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.ready

    def _loader(self, name: str, train: bool):
        trained = self._trained_batches if train else None
        if self.cfg.data.loader == "device":
            images, labels = self._on_device[name]
            return device_loader(
                images,
                labels,
                batch_size=self.per_device_batch,
                aug=self.cfg.augment,
                train=train,
                seed=self.cfg.seed,
                rank=self._rank(),
                world_size=self.world_size,
                channels_last=self.channels_last,
                trained=trained,
            )
        images, labels = {
            "train": (self.train_x, self.train_y),
            "val": (self.val_x, self.val_y),
            "test": (self.test_x, self.test_y),
        }[name]
        workers = default_workers() if self.cfg.data.num_workers is None else self.cfg.data.num_workers
        # the same batch sampler as the device path (it shards for DDP itself), in CPU index tensors
        batches = ShardBatches(
            len(labels),
            batch_size=self.per_device_batch,
            train=train,
            seed=self.cfg.seed,
            rank=self._rank(),
            world_size=self.world_size,
        )
        dataset = ImageDataset(
            images, labels, torchvision_transform(self.cfg.augment, train=train), seed=self.cfg.seed if train else None
        )
        options = {"num_workers": workers, "pin_memory": self.pin_memory, "persistent_workers": workers > 0}
        if trained is not None:
            return ResumableLoader(dataset, batch_sampler=batches, trained=trained, **options)
        return DataLoader(dataset, batch_sampler=batches, **options)

    def train_dataloader(self):
        return self._loader("train", train=True)

    def val_dataloader(self):
        return self._loader("val", train=False)

    def test_dataloader(self):
        return self._loader("test", train=False)
