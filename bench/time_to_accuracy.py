"""Time to accuracy: the `fast` grid's recipe (jobs/fast.toml) trained by ``cifar_hpc.training.train.run``, with
the test accuracy measured after every epoch, on one GPU.

Targets (issue 5): ResNet-18 to 94% test accuracy, ResNet-34 to 95%, on REAL CIFAR-10. The clock is
the training time (each epoch from its start to the end of its last batch: validation and our own
per-epoch test pass are excluded; compilation and warm-up fall inside epoch 1 and are counted). The
run's own wall time is recorded too.

On GENERATED data (``cifar-hpc data synth``, or when --data-dir holds no CIFAR-10 and a generated set
is written instead) the accuracies say nothing about CIFAR-10: the result is labelled ``generated``,
no target is claimed, and what remains meaningful is the time per epoch.

    python -m bench.time_to_accuracy --data-dir data       # full, needs a GPU; real CIFAR-10 if data/ has it
    python -m bench.time_to_accuracy --models resnet34 --epochs 20 --data-dir data
    python -m bench.time_to_accuracy --tiny                 # CI/CPU: 1 epoch on tiny generated data
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from bench.common import record, synchronize
from cifar_hpc.base.errors import UserError
from cifar_hpc.config.train_config import AugmentConfig, TrainConfig, WandbConfig
from cifar_hpc.data import cifar_files, layout
from cifar_hpc.study.grid import expand, load_grid
from cifar_hpc.training.devices import resolve_device_settings
from cifar_hpc.training.loaders import device_loader
from cifar_hpc.training.train import run as train_run

TARGETS = {"resnet18": 0.94, "resnet34": 0.95}
GOAL_SECONDS = {"resnet18": 15.0}  # on one H100


class EpochTestAccuracy(Callback):
    """After every training epoch: the test accuracy of the current weights, and the training clock.

    The clock runs from each epoch's start to the end of its last training batch (validation and
    this test pass are outside it). The test pass uses the eval transform of the device loader
    (normalise only) in eval mode, bf16 autocast on a GPU, like Lightning's own test step.
    """

    def __init__(self, test_x: np.ndarray, test_y: np.ndarray, aug: AugmentConfig, bf16: bool, on_epoch=None) -> None:
        """``on_epoch(rows)``: called with the rows so far after every epoch (to write partial results)."""
        self.test_x, self.test_y, self.aug, self.bf16 = test_x, test_y, aug, bf16
        self.on_epoch = on_epoch
        self.rows: list[dict] = []
        self.train_s = 0.0
        self._epoch_start: float | None = None
        self._last_batch_end: float | None = None
        self._fit_start: float | None = None
        self._batches = None  # the test set on the device, made at the first pass

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_start = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        synchronize(pl_module.device)
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == trainer.num_training_batches - 1:
            synchronize(pl_module.device)
            self._last_batch_end = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        end = self._last_batch_end or time.perf_counter()
        epoch_s = end - self._epoch_start
        self.train_s += epoch_s
        t0 = time.perf_counter()
        acc = self.test_accuracy(pl_module)
        self.rows.append(
            {
                "epoch": trainer.current_epoch + 1,
                "epoch_train_s": round(epoch_s, 3),
                "train_s": round(self.train_s, 3),
                "test_acc": round(acc, 4),
                "since_fit_start_s": round(time.perf_counter() - self._fit_start, 3),
                "test_pass_s": round(time.perf_counter() - t0, 3),
            }
        )
        self._last_batch_end = None
        if self.on_epoch is not None and trainer.is_global_zero:
            self.on_epoch(self.rows)

    @torch.no_grad()
    def test_accuracy(self, pl_module) -> float:
        device = pl_module.device
        if self._batches is None:
            self._batches = device_loader(
                torch.from_numpy(self.test_x).to(device),
                torch.from_numpy(self.test_y.astype(np.int64)).to(device),
                batch_size=1000,
                aug=self.aug,
                train=False,
                seed=0,
                channels_last=pl_module.channels_last,
            )
        was_training = pl_module.training
        pl_module.eval()
        correct = 0
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
            for images, labels in self._batches:
                correct += int((pl_module(images).argmax(1) == labels).sum())
        pl_module.train(was_training)
        return correct / len(self.test_y)


def fast_config() -> TrainConfig:
    """The single run of the `fast` grid."""
    runs = expand(load_grid("fast"))
    if len(runs) != 1:
        raise UserError(f"jobs/fast.toml should describe one run, it describes {len(runs)}")
    return runs[0].config


def summarize(rows: list[dict], target: float, real: bool) -> dict:
    reached = next((r for r in rows if r["test_acc"] >= target), None)
    steady = statistics.median(r["epoch_train_s"] for r in rows[1:]) if len(rows) > 1 else None
    return {
        "target_test_acc": target,
        "claim": "real CIFAR-10" if real else "none: generated data, accuracies say nothing about CIFAR-10",
        "reached_at_epoch": reached["epoch"] if reached and real else None,
        "train_s_to_target": reached["train_s"] if reached and real else None,
        "first_epoch_train_s": rows[0]["epoch_train_s"] if rows else None,
        "steady_epoch_train_s": steady,
        "note": "first epoch includes torch.compile and cuDNN warm-up; steady = median of the other epochs",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke: 1 epoch on tiny generated data")
    parser.add_argument("--data-dir", default="data", help="folder with cifar-10-batches-py/ (real or generated)")
    parser.add_argument("--models", default="resnet18,resnet34")
    parser.add_argument("--epochs", type=int, default=None, help="override the grid's epochs")
    parser.add_argument("--batch-size", type=int, default=None, help="override the grid's batch size")
    parser.add_argument("--keep", default=None, help="keep the runs' folders here (default: a temp dir)")
    parser.add_argument(
        "--out", default=None, help="write the JSON here (also with --tiny), rewritten after every epoch"
    )
    args = parser.parse_args(argv)

    on_gpu = torch.cuda.is_available()
    if not on_gpu and not args.tiny:
        sys.exit(
            "bench.time_to_accuracy trains the fast recipe on a GPU and torch sees none here; "
            "--tiny exercises the code on CPU"
        )
    base = fast_config()
    models = [m for m in args.models.split(",") if m]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(args.data_dir)
        if args.tiny:
            data_dir = Path(tmp) / "data"
            cifar_files.write_synthetic(data_dir, train_per_batch=16, test=40)
            models = models[:1]
        elif not layout.batch_dir(data_dir).is_dir():
            print(
                f"no CIFAR-10 under {data_dir}: writing a GENERATED set of CIFAR-10's size (timing only)",
                file=sys.stderr,
            )
            data_dir = Path(tmp) / "data"
            cifar_files.write_synthetic(data_dir, train_per_batch=10_000, test=10_000)
        arrays = cifar_files.load_cifar10(data_dir)
        real = not arrays.generated
        out_root = Path(args.keep) if args.keep else Path(tmp) / "runs"
        name = f"time_to_accuracy-{'gpu' if on_gpu else 'cpu'}-{'cifar10' if real else 'generated'}"
        figures: dict = {
            "data": arrays.kind,
            "train_images": len(arrays.train_y),
            "test_images": len(arrays.test_y),
            "recipe": "jobs/fast.toml",
            "runs": {},
        }
        for model in models:
            cfg = base.replace(
                model=model,
                out_dir=str(out_root / model),
                wandb=WandbConfig(mode="disabled"),
                data=dataclasses.replace(base.data, dir=str(data_dir)),
                **({"epochs": args.epochs} if args.epochs else {}),
                **({"batch_size": args.batch_size} if args.batch_size else {}),
            )
            if args.tiny:
                cfg = cfg.replace(
                    epochs=1,
                    batch_size=24,
                    compile=False,
                    accelerator="cpu",
                    data=dataclasses.replace(cfg.data, stage=False),
                )
            device_settings = resolve_device_settings(cfg)

            def partial(rows: list[dict], model: str = model, target: float = TARGETS[model]) -> None:
                if args.out:  # a run stopped at a time cap still leaves the epochs it finished
                    figures["runs"][model] = {**summarize(rows, target, real), "per_epoch": rows, "partial": True}
                    record(name, figures, tiny=args.tiny, path=args.out, echo=False)

            callback = EpochTestAccuracy(
                arrays.test_x, arrays.test_y, cfg.augment, device_settings.precision == "bf16-mixed", on_epoch=partial
            )
            print(f"{model}: {cfg.epochs} epochs, batch {cfg.batch_size} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            result = train_run(cfg, extra_callbacks=[callback])
            wall = time.perf_counter() - t0
            figures["runs"][model] = {
                "recipe": {
                    "epochs": cfg.epochs,
                    "batch_size": cfg.batch_size,
                    "optimizer": cfg.optim.name,
                    "lr": cfg.optim.lr,
                    "schedule": cfg.optim.schedule,
                    "weight_decay": cfg.optim.weight_decay,
                    "loader": cfg.data.loader,
                    "compile": cfg.compile,
                    "precision": device_settings.precision,
                    "channels_last": device_settings.channels_last,
                    "augment": dataclasses.asdict(cfg.augment),
                    "tricks": result.get("tricks"),
                },
                **summarize(callback.rows, TARGETS[model], real),
                "goal_s": GOAL_SECONDS.get(model),
                "per_epoch": callback.rows,
                "final_test_acc_best_val_checkpoint": result.get("test_acc") if real else None,
                "final_test_acc_generated_data": None if real else result.get("test_acc"),
                "run_wall_s": round(wall, 2),
                "train_images_per_s": result.get("train_images_per_s"),
                "gpu_util_mean": result.get("gpu_util_mean"),
            }
    record(name, figures, tiny=args.tiny, path=args.out)


if __name__ == "__main__":
    main()
