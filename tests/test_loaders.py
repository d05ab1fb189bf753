"""The two loaders: same split, same batch arithmetic, same augmentations in distribution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cifar_hpc.config.train_config import AugmentConfig
from cifar_hpc.training.batches import ShardBatches, per_rank_batches
from cifar_hpc.training.loaders import (
    ImageDataset,
    augment_batch,
    device_loader,
    split_train_val,
    torchvision_transform,
)


def test_split_is_fixed_by_seed_and_disjoint():
    train, val = split_train_val(1000, 0.1, seed=3)
    assert len(val) == 100 and len(train) == 900 and not set(train) & set(val)
    assert np.array_equal(split_train_val(1000, 0.1, seed=3)[1], val)
    assert not np.array_equal(split_train_val(1000, 0.1, seed=4)[1], val)


def test_per_rank_batches_drop_the_partial_batch():
    assert per_rank_batches(45_000, 1, 512) == 87
    assert per_rank_batches(45_000, 8, 64) == 87  # same global batch, same number of steps
    assert per_rank_batches(36, 2, 6) == 3


def test_device_batches_shard_one_permutation_across_ranks():
    images = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1).expand(20, 3, 32, 32).contiguous()
    labels = torch.arange(20)
    aug = AugmentConfig(crop=False, flip=False, normalize=False)
    seen = []
    for rank in range(2):
        loader = device_loader(images, labels, batch_size=5, aug=aug, train=True, seed=0, rank=rank, world_size=2)
        loader.batch_sampler.sampler.set_epoch(1)  # what Lightning calls at every epoch
        seen.append(torch.cat([y for _, y in loader]))
    assert len(seen[0]) == len(seen[1]) == 10
    assert sorted(torch.cat(seen).tolist()) == list(range(20))  # disjoint, complete


def test_device_loader_is_a_plain_dataloader_lightning_leaves_alone():
    """Lightning calls ``set_epoch`` on ``batch_sampler.sampler`` and, with use_distributed_sampler
    off, keeps the loader as it is: a DataLoader with our batch sampler, not a re-wrapped one."""
    from lightning.fabric.utilities.data import _set_sampler_epoch  # the function Lightning's loops call
    from torch.utils.data import DataLoader, DistributedSampler

    images, labels = _ramp_images(12), torch.arange(12)
    loader = device_loader(images, labels, batch_size=4, aug=AugmentConfig(), train=True, seed=0)
    assert isinstance(loader, DataLoader) and isinstance(loader.batch_sampler, ShardBatches)
    assert isinstance(loader.batch_sampler.sampler, DistributedSampler)
    _set_sampler_epoch(loader, 3)
    assert loader.batch_sampler.sampler.epoch == 3
    assert len(loader) == 3 and [len(y) for _, y in loader] == [4, 4, 4]


def test_device_loader_is_reproducible_and_reshuffles_per_epoch():
    """Same seed and epoch: bit-identical batches (order and augmentation); another epoch: others."""
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(40)
    aug = AugmentConfig(rotate=True)

    def epoch_of(seed: int, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        loader = device_loader(images, labels, batch_size=8, aug=aug, train=True, seed=seed)
        loader.batch_sampler.sampler.set_epoch(epoch)
        return list(loader)

    first, again = epoch_of(0, 2), epoch_of(0, 2)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    later = epoch_of(0, 3)
    assert not torch.equal(torch.cat([y for _, y in first]), torch.cat([y for _, y in later]))
    other_seed = epoch_of(1, 2)
    assert not torch.equal(torch.cat([x for x, _ in first]), torch.cat([x for x, _ in other_seed]))


def _ramp_images(n: int) -> torch.Tensor:
    """A horizontal ramp (so flips show) in every image: uint8 (n, 3, 32, 32)."""
    ramp = torch.linspace(40, 255, 32).round().to(torch.uint8)
    return ramp.view(1, 1, 1, 32).expand(n, 3, 32, 32).contiguous()


@pytest.mark.parametrize(
    "aug",
    [
        AugmentConfig(crop=True, flip=False, normalize=False),
        AugmentConfig(crop=False, flip=True, normalize=False),
        AugmentConfig(crop=False, flip=False, rotate=True, rotate_degrees=30, normalize=False),
        AugmentConfig(crop=True, flip=True, rotate=True, normalize=True),
    ],
    ids=["crop", "flip", "rotate", "all"],
)
def test_both_loaders_augment_alike_in_distribution(aug):
    """Mean and spread of each pixel over 3000 augmented copies agree between the two paths."""
    torch.manual_seed(0)
    n = 3000
    images = _ramp_images(n)
    on_device = augment_batch(images, aug, torch.Generator().manual_seed(1))
    transform = torchvision_transform(aug, train=True)
    per_image = torch.stack([transform(images[i]) for i in range(n)])
    assert on_device.shape == per_image.shape == (n, 3, 32, 32)
    # per-pixel two-sample z-test on the means: 3072 pixels, so |z| < 5.5 everywhere unless biased
    mean_a, mean_b, std_a, std_b = on_device.mean(0), per_image.mean(0), on_device.std(0), per_image.std(0)
    z = (mean_a - mean_b).abs() / ((std_a**2 + std_b**2) / n).sqrt().clamp_min(1e-6)
    assert z.max() < 5.5, f"pixel means differ beyond sampling noise (max |z| = {z.max():.1f})"
    spread = std_b > 0.05
    assert ((std_a[spread] / std_b[spread]) - 1).abs().max() < 0.2
    assert spread.any()  # and augmentation did something: not every copy is the original


def test_eval_path_is_only_normalisation():
    images = _ramp_images(4)
    cfg = AugmentConfig()
    ds = ImageDataset(images.numpy(), np.zeros(4, dtype=np.int64), torchvision_transform(cfg, train=False))
    loader = device_loader(images, torch.zeros(4, dtype=torch.long), batch_size=4, aug=cfg, train=False, seed=0)
    ((batch, _),) = list(loader)
    assert torch.allclose(batch, torch.stack([ds[i][0] for i in range(4)]), atol=1e-6)


# --- a resumed run's batches are the uninterrupted run's ---------------------------------------------


def _training_loader(loader: str, workers: int, trained=lambda: 0):
    """The DataModule's training loader over 40 generated images (no Trainer: one process)."""
    from cifar_hpc.config.train_config import TrainConfig
    from cifar_hpc.data.cifar_files import CifarArrays
    from cifar_hpc.training.loaders import CifarDataModule

    generator = np.random.default_rng(0)
    arrays = CifarArrays(
        generator.integers(0, 256, (44, 3, 32, 32), dtype=np.uint8),
        generator.integers(0, 10, 44).astype(np.int64),
        generator.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8),
        generator.integers(0, 10, 4).astype(np.int64),
        generated=True,
    )
    cfg = TrainConfig.from_dict(
        {
            "batch_size": 8,
            "seed": 3,
            "augment": {"crop": True, "flip": True, "rotate": True},
            "data": {"loader": loader, "num_workers": workers, "val_fraction": 0.1},
        }
    )
    module = CifarDataModule(arrays, cfg)
    module.setup("fit")
    module._trained_batches = trained
    return module.train_dataloader()


def _epoch(loader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.batch_sampler.sampler.set_epoch(epoch)  # what Lightning calls at every epoch
    return list(loader)


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))


@pytest.mark.parametrize("loader", ["torchvision", "device"])
def test_an_epochs_batches_depend_on_the_seed_and_epoch_only(loader):
    """Not on what ran before in the process, nor on the workers: the torchvision path's per-image
    transforms are seeded by (seed, epoch, image), the device path's by (seed, epoch, batch, rank).
    Before, a fresh process (a resumed run) replayed epoch 1's order in epoch 2 (a loader generator
    seeded once, advancing per epoch)."""
    straight = _training_loader(loader, 0)
    first, second = _epoch(straight, 0), _epoch(straight, 1)
    fresh = _training_loader(loader, 0)
    assert _same(_epoch(fresh, 1), second)  # epoch 1 in a new process: what the uninterrupted one drew
    assert not torch.equal(torch.cat([y for _, y in first]), torch.cat([y for _, y in second]))
    torch.manual_seed(12345)  # the global stream is not what augments
    assert _same(_epoch(_training_loader(loader, 0), 1), second)
    if loader == "torchvision":
        assert _same(_epoch(_training_loader(loader, 2), 1), second)  # in worker processes alike


@pytest.mark.parametrize("loader", ["torchvision", "device"])
def test_the_training_loader_resumes_where_its_checkpoint_was_saved(loader):
    """Its state (saved by Lightning in a checkpoint) is the epoch and the batches trained: restored, the
    next pass gives the rest of that epoch (mid-epoch) or the next epoch (saved at an epoch's end)."""
    uninterrupted = _training_loader(loader, 0)
    epoch_one, epoch_two = _epoch(uninterrupted, 1), _epoch(uninterrupted, 2)
    saved = _training_loader(loader, 0, trained=lambda: 2)
    saved.batch_sampler.sampler.set_epoch(1)
    state = saved.state_dict()
    assert state == {"epoch": 1, "trained": 2}
    resumed = _training_loader(loader, 0)
    resumed.load_state_dict(state)
    assert _same(_epoch(resumed, 1), epoch_one[2:])  # Lightning sets the same epoch again: still resumed
    assert _same(_epoch(resumed, 2), epoch_two)  # and the next epoch is whole
    at_end = _training_loader(loader, 0)
    at_end.load_state_dict({"epoch": 1, "trained": len(epoch_one)})
    assert _same(list(at_end), epoch_two)
