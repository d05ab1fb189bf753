"""On this CPU, as ratios measured in one run: Lightning's per-step overhead against a bare PyTorch loop
(same model, same batches, same optimizer and schedule), and a training job's start-up in seconds.

Per-step overhead, three loops over the SAME pre-made batches (augmented and normalised beforehand, so
no loader cost in any of them), runs alternated in rotating order to cancel drift on a shared machine:

* ``bare``: forward, log-softmax + NLL, backward, SGD (Nesterov) step, per-step LambdaLR step;
* ``lightning``: the same ``training_step`` and optimizer in a minimal LightningModule and a Trainer
  with no logger, checkpoints, progress bar or validation: what Lightning itself costs;
* ``project``: ``cifar_hpc.training.module.CifarResNet`` (torchmetrics accuracy, ``self.log``) in a Trainer
  with train.run's loggers and callbacks (CSV logger, checkpoints, LR monitor, telemetry, run clock):
  what a real run pays per step.

Done twice: with ResNet-18 (batch 16: compute-bound on a CPU, so the ratio is small) and with a
trivial linear model, where the step is nearly all overhead: its milliseconds per step are what
the framework adds to every step on a GPU too, where a ResNet-18 step takes only a few ms.

Start-up, in fresh interpreters: imports (torch, lightning, cifar_hpc.training.train), data (verify +
staging to a fresh node-local scratch + loading a CIFAR-10-sized generated set) and a gloo process
group of world size 1 (init, barrier, destroy).

    python -m bench.cpu_ratios            # full: results/cpu-ratios.json (waits for a quiet CPU first)
    python -m bench.cpu_ratios --tiny     # CI: 2 steps each, small data, nothing recorded
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.common import record, wait_for_quiet_cpu
from cifar_hpc.config.train_config import AugmentConfig, TrainConfig
from cifar_hpc.training.loaders import augment_batch
from cifar_hpc.training.models import build_model
from cifar_hpc.training.schedule import lr_factor

# --- per-step overhead --------------------------------------------------------------------------------


def make_batches(n: int, batch: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n * batch, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (n * batch,), generator=generator)
    aug = AugmentConfig(crop=True, flip=True)
    return [
        (augment_batch(images[i * batch : (i + 1) * batch], aug, generator), labels[i * batch : (i + 1) * batch])
        for i in range(n)
    ]


def build(model_name: str) -> nn.Module:
    torch.manual_seed(0)
    if model_name == "linear":
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    return build_model(model_name)


def optimizer_and_schedule(params, total: int):
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, "onecycle"))
    return optimizer, schedule


def loss_of(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.nll_loss(F.log_softmax(model(images).float(), dim=1), labels)


def run_bare(model_name: str, batches) -> list[float]:
    """Seconds of each step, start to start (the last step: start to end)."""
    model = build(model_name)
    model.train()
    optimizer, schedule = optimizer_and_schedule(model.parameters(), len(batches))
    stamps = []
    for images, labels in batches:
        stamps.append(time.perf_counter())
        loss = loss_of(model, images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    stamps.append(time.perf_counter())
    return [b - a for a, b in itertools.pairwise(stamps)]


def run_lightning(model_name: str, batches, *, project: bool, out_dir: Path) -> list[float]:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback

    stamps: list[float] = []

    class Stamps(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            stamps.append(time.perf_counter())

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            # the last step ends here (Lightning's epoch-end work after it is not per-step overhead)
            stamps.append(time.perf_counter())

    class Batches:  # a plain iterable: Lightning would take a list as a list of loaders
        def __iter__(self):
            return iter(batches)

        def __len__(self) -> int:
            return len(batches)

    class Data(pl.LightningDataModule):
        def train_dataloader(self):
            return Batches()

    trainer_kwargs = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 1,
        "limit_val_batches": 0,
        "num_sanity_val_steps": 0,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    if project:
        from lightning.pytorch.loggers import CSVLogger

        from cifar_hpc.training import telemetry
        from cifar_hpc.training.callbacks import build_callbacks
        from cifar_hpc.training.module import CifarResNet
        from cifar_hpc.training.train import RunClock

        cfg = TrainConfig.from_dict(
            {
                "model": model_name if model_name != "linear" else "resnet18",
                "epochs": 1,
                "batch_size": len(batches[0][1]),
                "precision": "32-true",
            }
        )
        module = CifarResNet(cfg, batches_per_epoch=len(batches))
        module.model = build(model_name)  # same initial weights as the other loops (the linear model too)
        callbacks = [
            Stamps(),
            RunClock(cfg.batch_size),
            telemetry.GpuTelemetry(out_dir),
            *build_callbacks(cfg, out_dir),
        ]
        trainer = pl.Trainer(
            **trainer_kwargs,
            callbacks=callbacks,
            logger=CSVLogger(str(out_dir), name="logs"),
            default_root_dir=str(out_dir),
            log_every_n_steps=max(1, min(50, len(batches))),
        )
    else:

        class Minimal(pl.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.model = build(model_name)

            def training_step(self, batch, batch_idx):
                return loss_of(self.model, *batch)

            def configure_optimizers(self):
                optimizer, schedule = optimizer_and_schedule(self.parameters(), len(batches))
                return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

        module = Minimal()
        trainer = pl.Trainer(
            **trainer_kwargs,
            callbacks=[Stamps()],
            logger=False,
            enable_checkpointing=False,
            default_root_dir=str(out_dir),
        )
    trainer.fit(module, datamodule=Data())
    return [b - a for a, b in itertools.pairwise(stamps)]


def overhead(model_name: str, batch: int, steps: int, rounds: int, warm: int, tmp: Path, threads: int) -> dict:
    torch.set_num_threads(threads)
    batches = make_batches(steps, batch)
    variants = ("bare", "lightning", "project")
    per_variant: dict[str, list[float]] = {v: [] for v in variants}
    per_round = []
    for r in range(rounds):
        means = {}
        for v in variants[r % 3 :] + variants[: r % 3]:  # rotate the order each round
            if v == "bare":
                times = run_bare(model_name, batches)
            else:
                times = run_lightning(
                    model_name, batches, project=v == "project", out_dir=tmp / f"{v}-{model_name}-{r}"
                )
            steady = times[warm:]
            per_variant[v] += steady
            means[v] = statistics.fmean(steady)
        per_round.append({v: round(means[v] * 1e3, 3) for v in variants})
    mean = {v: statistics.fmean(ts) for v, ts in per_variant.items()}
    median = {v: statistics.median(ts) for v, ts in per_variant.items()}
    return {
        "model": model_name,
        "batch": batch,
        "threads": threads,
        "steps_per_run": steps,
        "warmup_steps_dropped": warm,
        "rounds": rounds,
        "ms_per_step_mean": {v: round(m * 1e3, 3) for v, m in mean.items()},
        "ms_per_step_median": {v: round(m * 1e3, 3) for v, m in median.items()},
        "per_round_mean_ms": per_round,
        "lightning_overhead_pct": round(100 * (mean["lightning"] / mean["bare"] - 1), 2),
        "project_overhead_pct": round(100 * (mean["project"] / mean["bare"] - 1), 2),
        "lightning_overhead_ms": round((median["lightning"] - median["bare"]) * 1e3, 3),
        "project_overhead_ms": round((median["project"] - median["bare"]) * 1e3, 3),
        "per_round_lightning_overhead_pct": [round(100 * (r["lightning"] / r["bare"] - 1), 1) for r in per_round],
        "per_round_project_overhead_pct": [round(100 * (r["project"] / r["bare"] - 1), 1) for r in per_round],
        "median_of_round_ratios_pct": {
            v: round(100 * (statistics.median(r[v] / r["bare"] for r in per_round) - 1), 2)
            for v in ("lightning", "project")
        },
    }


# --- start-up -----------------------------------------------------------------------------------------

STARTUP_SCRIPT = r"""
import json, os, sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
import lightning.pytorch
t2 = time.perf_counter()
import cifar_hpc.training.train, cifar_hpc.cli
t3 = time.perf_counter()
from cifar_hpc.data import cifar_files, fetch
folder = cifar_files.verify(sys.argv[1])
staged = fetch.stage_to_scratch(folder, scratch=sys.argv[2])
arrays = cifar_files.load_cifar10(staged)
t4 = time.perf_counter()
import torch.distributed as dist
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{sys.argv[3]}", rank=0, world_size=1)
dist.barrier()
dist.destroy_process_group()
t5 = time.perf_counter()
print(json.dumps({"import_torch_s": t1 - t0, "import_lightning_s": t2 - t1, "import_cifar_hpc_s": t3 - t2,
                  "data_verify_stage_load_s": t4 - t3, "staged": staged != folder, "train_images": len(arrays.train_y),
                  "process_group_gloo_s": t5 - t4, "inside_python_s": t5 - t0}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def startup(data_root: Path, tmp: Path, repeats: int) -> dict:
    rows = []
    for i in range(repeats):
        scratch = tmp / f"scratch-{i}"  # fresh each time: the staging copy really happens
        scratch.mkdir()
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", STARTUP_SCRIPT, str(data_root), str(scratch), str(free_port())],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        wall = time.perf_counter() - t0
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["process_wall_s"] = wall
        row["interpreter_and_exit_s"] = wall - row["inside_python_s"]
        rows.append({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
    keys = [k for k, v in rows[0].items() if isinstance(v, float)]
    return {
        "repeats": repeats,
        "median": {k: round(statistics.median(r[k] for r in rows), 3) for k in keys},
        "first": rows[0],
        "train_images": rows[0]["train_images"],
        "staged": rows[0]["staged"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)
    from cifar_hpc.data.cifar_files import write_synthetic

    load = wait_for_quiet_cpu(tiny=args.tiny)
    figures: dict = {"threads": torch.get_num_threads(), "load": load}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        threads = torch.get_num_threads()
        # the linear model's step is pure Python and framework: one thread (with two, OpenMP's
        # hand-offs add milliseconds per step as soon as another process wants the cores)
        if args.tiny:
            figures["resnet18"] = overhead("resnet18", 2, 2, 1, 1, tmp, threads)
            figures["linear"] = overhead("linear", 4, 3, 1, 1, tmp, 1)
        else:
            # one thread too: with two, a step's time doubles whenever another process takes a core
            figures["resnet18"] = overhead("resnet18", args.batch, args.steps, args.rounds, 2, tmp, 1)
            figures["linear"] = overhead("linear", args.batch, 300, args.rounds, 20, tmp, 1)
        torch.set_num_threads(threads)
        data_root = tmp / "data"
        write_synthetic(data_root, train_per_batch=8 if args.tiny else 10_000, test=8 if args.tiny else 10_000)
        figures["startup"] = startup(data_root, tmp, 1 if args.tiny else 3)
    figures["goal_lightning_overhead_pct"] = 5.0
    figures["note"] = (
        "overhead_pct = pooled mean step time / bare pooled mean - 1; median_of_round_ratios_pct: "
        "the median over rounds of each round's ratio (robust to load changing between rounds); "
        "overhead_ms from pooled medians. The linear model's ms are the framework's fixed per-step cost."
    )
    figures["load_after"] = wait_for_quiet_cpu(tiny=True)["load1_at_start"]
    record("cpu-ratios", figures, tiny=args.tiny)


if __name__ == "__main__":
    main()
