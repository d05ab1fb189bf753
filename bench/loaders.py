"""Images/s of the two loaders, measured in one run on the same data: the torchvision DataLoader
(per-image transforms in worker processes) against the on-device batched tensor augmentation
(here on the CPU, as the device). Same augmentations: crop (pad 4), flip, rotation ±15°, normalise.

    python -m bench.loaders            # full: 10k generated images, batch 256, recorded to results/
    python -m bench.loaders --tiny     # CI: a few batches, nothing recorded
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from bench.common import record
from cifar_hpc.config.train_config import TrainConfig
from cifar_hpc.data.cifar_files import load_cifar10, write_synthetic
from cifar_hpc.training.loaders import CifarDataModule, default_workers


def images_per_second(loader, batches: int) -> float:
    iterator = iter(loader)
    next(iterator)  # start-up (worker spawn) is not throughput
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        images, _labels = next(iterator)
        seen += len(images)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    per_batch, batches = (300, 3) if args.tiny else (2000, 30)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic(tmp, train_per_batch=per_batch, test=100)
        arrays = load_cifar10(tmp)
    figures = {
        "data": "generated",
        "batch_size": args.batch_size,
        "batches": batches,
        "augment": "crop(pad 4) + flip + rotate(15) + normalize",
        "threads": torch.get_num_threads(),
    }
    for loader in ("torchvision", "device"):
        cfg = TrainConfig.from_dict(
            {
                "batch_size": args.batch_size,
                "augment": {"rotate": True},
                "data": {"loader": loader, "val_fraction": 0.01},
            }
        )
        datamodule = CifarDataModule(arrays, cfg)
        datamodule.setup("fit")
        figures[f"{loader}_images_per_s"] = round(images_per_second(datamodule.train_dataloader(), batches), 1)
    figures["torchvision_workers"] = default_workers()
    figures["device_over_torchvision"] = round(figures["device_images_per_s"] / figures["torchvision_images_per_s"], 2)
    record("loaders-cpu", figures, tiny=args.tiny)


if __name__ == "__main__":
    main()
