"""Training throughput (images/s) and MFU of ResNet-18/34 (CIFAR stem) on one GPU.

Every case trains for real: the module's own loss and optimizer (``cifar_hpc.training.module.nll_loss`` and
``build_optimizer``: SGD with Nesterov momentum and the per-step one-cycle schedule), bf16 autocast and
channels_last on the GPU, batches from the project's own loaders (``device_loader`` with the whole
uint8 set on the GPU, or the torchvision DataLoader with per-image transforms in workers). Cases:
model x batch x loader x ``torch.compile`` off/on, plus the same step through Lightning
(``CifarResNet`` + ``Trainer``) to show what the framework costs at GPU step times.

MFU = images/s x 3 x forward FLOPs per image (counted by torch's FLOP counter, ``forward_flops``;
backward is taken as twice the forward) / the bf16 matmul peak measured on the same GPU in the same
run (not the datasheet). GPU utilisation is NVML's, sampled every 50 ms during the timed window.
The data is GENERATED (50k images, CIFAR-10's shape): throughput does not depend on the pixels.

    python -m bench.throughput                       # full, needs a GPU: results/throughput-gpu.json
    python -m bench.throughput --models resnet18 --batches 512 --loaders device --compile on   # one case
    python -m bench.throughput --tiny                # CI/CPU: batch 8, 2 steps of every code path
    python -m bench.throughput --out x.json --keep-going   # as bench.gpu_check runs it: JSON after each case
"""

from __future__ import annotations

import argparse
import linecache
import math
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from bench.common import matmul_peak_tflops, record, synchronize
from bench.host_reads import ReadCounter
from cifar_hpc.config.train_config import TrainConfig
from cifar_hpc.data.cifar_files import load_cifar10, write_synthetic
from cifar_hpc.training.batches import ShardBatches
from cifar_hpc.training.epoch_sums import EpochSums
from cifar_hpc.training.loaders import CifarDataModule, device_loader
from cifar_hpc.training.models import build_model, forward_flops
from cifar_hpc.training.module import build_optimizer, nll_loss

GOAL_IMAGES_PER_S = 80_000  # ResNet-18 on one H100 (issue 5)
GOAL_GPU_UTIL = 95.0


@dataclass(frozen=True)
class Case:
    model: str
    batch: int
    loader: str
    compile: bool
    path: str = "bare"  # bare PyTorch loop, or "lightning" (CifarResNet + Trainer)

    @property
    def name(self) -> str:
        return f"{self.model}/b{self.batch}/{self.loader}/{'compiled' if self.compile else 'eager'}/{self.path}"


# --- NVML during the timed window -------------------------------------------------------------------


class UtilSampler:
    """NVML utilisation of the training GPU every ``interval_s`` while the window is open (GPU only)."""

    def __init__(self, device: torch.device, interval_s: float = 0.05) -> None:
        self.samples: list[float] = []
        self.reader = None
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        if device.type != "cuda":
            self.error = "not a CUDA device"
            return
        from cifar_hpc.training.gpu_monitor import NvmlReader, NvmlUnavailable

        try:
            self.reader = NvmlReader()
        except NvmlUnavailable as e:
            self.error = str(e)
            return
        indices = self.reader.gpu_indices
        ordinal = device.index if device.index is not None else torch.cuda.current_device()
        self.gpu = indices[ordinal] if ordinal < len(indices) else indices[0]
        self.interval_s = interval_s

    def __enter__(self) -> UtilSampler:
        if self.reader is not None:
            self._stop.clear()
            self.samples = []
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            for s in self.reader.read():
                if s.gpu == self.gpu and s.util_pct is not None:
                    self.samples.append(s.util_pct)

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(5)
            self._thread = None

    def summary(self) -> dict:
        if not self.samples:
            return {
                "gpu_util_mean": None,
                "gpu_util_min": None,
                "gpu_util_samples": 0,
                **({"gpu_util_note": self.error} if self.error else {}),
            }
        return {
            "gpu_util_mean": round(float(np.mean(self.samples)), 1),
            "gpu_util_min": float(min(self.samples)),
            "gpu_util_samples": len(self.samples),
        }

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()


# --- host-device synchronisations in one step ---------------------------------------------------------


class SyncPoints:
    """Where one training step makes the host wait for the device, over the WHOLE step (for Lightning:
    one batch start to the next, its end-of-batch work included).

    Two detectors: ``host_reads.ReadCounter`` on any device (reads of tensor values: ``.item()``,
    ``bool(t)``, ...; what the CPU tests check) and, on CUDA, ``torch.cuda.set_sync_debug_mode("warn")``
    (every synchronising call, e.g. a pageable copy), without the warning its own switching raises."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.places: dict[str, int] = {}
        self.reads = ReadCounter()
        self._catcher = None

    def start(self) -> None:
        self.reads.start()
        if self.device.type != "cuda":
            return
        import warnings

        self._catcher = warnings.catch_warnings(record=True)
        self._caught = self._catcher.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")

    def stop(self) -> None:
        self.reads.stop()
        if self._catcher is None:
            return
        torch.cuda.set_sync_debug_mode("default")
        self._catcher.__exit__(None, None, None)
        self._catcher = None
        for w in self._caught:
            if "synchroniz" in str(w.message) and "set_sync_debug_mode" not in linecache.getline(w.filename, w.lineno):
                where = f"{w.filename.split('site-packages/')[-1]}:{w.lineno}"
                self.places[where] = self.places.get(where, 0) + 1

    def summary(self) -> dict:
        return {
            "host_reads_per_step": dict(self.reads.places),
            "sync_points_per_step": self.places if self.device.type == "cuda" else None,
        }


# --- batches ------------------------------------------------------------------------------------------


def batch_source(case: Case, arrays, device: torch.device, channels_last: bool):
    """An endless iterator of (images, labels) on ``device``, from the project's loaders."""
    cfg = TrainConfig.from_dict(
        {
            "batch_size": case.batch,
            "augment": {"crop": True, "flip": True},
            "data": {"loader": case.loader, "val_fraction": 0.02},
        }
    )
    if case.loader == "device":
        images = torch.from_numpy(arrays.train_x).to(device)
        labels = torch.from_numpy(arrays.train_y.astype(np.int64)).to(device)
        loader = device_loader(
            images, labels, batch_size=case.batch, aug=cfg.augment, train=True, seed=0, channels_last=channels_last
        )
    else:
        datamodule = CifarDataModule(arrays, cfg, channels_last=channels_last, pin_memory=device.type == "cuda")
        loader = datamodule.train_dataloader()
    epoch = 0
    while True:
        if isinstance(loader.batch_sampler, ShardBatches):  # what Lightning does at every epoch
            loader.batch_sampler.sampler.set_epoch(epoch)
        for images, labels in loader:
            if case.loader == "torchvision":
                images = images.to(device, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
            yield images, labels
        epoch += 1


# --- the bare loop ------------------------------------------------------------------------------------


def time_bare(
    case: Case,
    arrays,
    device: torch.device,
    *,
    bf16: bool,
    channels_last: bool,
    warmup: int,
    steps: int | None,
    min_seconds: float,
    sampler: UtilSampler,
) -> dict:
    """The training step of ``CifarResNet`` without Lightning: the module's own loss (``nll_loss``),
    optimizer and per-step schedule (``build_optimizer``, the default config's SGD + one-cycle), same
    formats, and the same per-step metrics (``EpochSums``: loss, accuracy, NaN flag on the device), so
    that bare and Lightning do equal work and their difference is the framework's."""
    model = build_model(case.model).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optim = TrainConfig().optim
    # the schedule's length only shapes the LR curve, not the cost of a step
    optimizer, schedule = build_optimizer(optim, model.parameters(), optim.lr, total_steps=10_000)
    forward = torch.compile(model) if case.compile else model
    batches = batch_source(case, arrays, device, channels_last)
    sums = EpochSums(device)
    steps_done = 0

    def step() -> None:
        nonlocal steps_done
        images, labels = next(batches)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, log_probs = nll_loss(forward(images), labels)
        sums.add(loss, log_probs, labels, steps_done)
        sums.peek()
        steps_done += 1
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()

    t0 = time.perf_counter()
    for _ in range(warmup):  # compilation, cuDNN autotuning, worker start-up
        step()
    synchronize(device)
    warmup_s = time.perf_counter() - t0
    syncs = SyncPoints(device)
    syncs.start()
    step()
    syncs.stop()
    if steps is None:  # a short pilot sizes the timed window to about ``min_seconds``
        t0 = time.perf_counter()
        for _ in range(10):
            step()
        synchronize(device)
        steps = max(20, math.ceil(min_seconds / ((time.perf_counter() - t0) / 10)))
    with sampler:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        seconds = time.perf_counter() - t0
    return {
        "steps": steps,
        "seconds": round(seconds, 4),
        "warmup_s": round(warmup_s, 2),
        "images_per_s": round(steps * case.batch / seconds, 1),
        **sampler.summary(),
        **syncs.summary(),
    }


# --- the same through Lightning ----------------------------------------------------------------------


def time_lightning(
    case: Case,
    arrays,
    device: torch.device,
    *,
    bf16: bool,
    channels_last: bool,
    warmup: int,
    steps: int | None,
    min_seconds: float,
    sampler: UtilSampler,
) -> dict:
    """``CifarResNet`` (metrics, logging, per-step LR schedule) in a ``Trainer``: no checkpoints, no
    validation, no logger files; the timed window is steps ``warmup`` .. ``warmup + steps``."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback

    from cifar_hpc.training.module import CifarResNet

    steps = steps or max(50, math.ceil(min_seconds * GOAL_IMAGES_PER_S / case.batch))
    syncs = SyncPoints(device)

    class Window(Callback):
        def __init__(self) -> None:
            self.seen = 0
            self.t0 = self.t1 = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if self.seen == warmup - 1:  # one untimed step under the sync detector, start to next start
                syncs.start()
            if self.seen == warmup:
                syncs.stop()
                synchronize(device)
                sampler.__enter__()
                self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.seen += 1
            if self.seen == warmup + steps:
                synchronize(device)
                self.t1 = time.perf_counter()
                sampler.__exit__(None, None, None)

    cfg = TrainConfig.from_dict(
        {
            "model": case.model,
            "batch_size": case.batch,
            "epochs": 1000,
            "compile": case.compile,
            "precision": "bf16-mixed" if bf16 else "32-true",
            "channels_last": channels_last,
            "augment": {"crop": True, "flip": True},
            "data": {"loader": case.loader, "val_fraction": 0.02},
        }
    )
    datamodule = CifarDataModule(arrays, cfg, channels_last=channels_last, pin_memory=device.type == "cuda")
    module = CifarResNet(cfg, batches_per_epoch=datamodule.batches_per_epoch, channels_last=channels_last)
    if case.compile:  # the network, as train.run compiles it (a compiled LightningModule recompiles every step)
        module.model = torch.compile(module.model)
    window = Window()
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision=cfg.precision,
        max_steps=warmup + steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        benchmark=device.type == "cuda",
        callbacks=[window],
    )
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    total = time.perf_counter() - t0
    seconds = window.t1 - window.t0
    return {
        "steps": steps,
        "seconds": round(seconds, 4),
        "warmup_s": round(total - seconds, 2),
        "images_per_s": round(steps * case.batch / seconds, 1),
        **sampler.summary(),
        **syncs.summary(),
    }


# --- the sweep ----------------------------------------------------------------------------------------


def cases(models, batches, loaders, compiles, lightning_models) -> list[Case]:
    out = [
        Case(m, b, ld, c)
        for m in models
        for ld in loaders
        for b in batches
        for c in compiles
        if ld == "device" or b == sorted(batches)[len(batches) // 2]
    ]  # torchvision: middle batch only
    out += [Case(m, b, "device", c, "lightning") for m in lightning_models for b in batches for c in compiles]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke: batch 8, 2 timed steps, nothing recorded")
    parser.add_argument("--models", default="resnet18,resnet34")
    parser.add_argument("--batches", default="256,512,1024")
    parser.add_argument(
        "--loaders",
        default="device,torchvision",
        help="torchvision runs at the middle batch size only (it is the slow path)",
    )
    parser.add_argument("--compile", choices=("off", "on", "both"), default="both")
    parser.add_argument(
        "--lightning-models", default="resnet18", help="models also timed through Lightning ('' for none)"
    )
    parser.add_argument("--min-seconds", type=float, default=3.0, help="length of each timed window")
    parser.add_argument("--warmup", type=int, default=15, help="untimed steps first (compilation happens here)")
    parser.add_argument(
        "--out", default=None, help="write the JSON here (also with --tiny), rewritten after every case"
    )
    parser.add_argument("--keep-going", action="store_true", help="record a failing case's error and go on")
    args = parser.parse_args(argv)

    on_gpu = torch.cuda.is_available()
    if not on_gpu and not args.tiny:
        sys.exit("bench.throughput measures a GPU and torch sees none here; --tiny exercises the code on CPU")
    device = torch.device("cuda" if on_gpu else "cpu")
    models = [m for m in args.models.split(",") if m]
    batches = [int(b) for b in args.batches.split(",") if b]
    loaders = [ld for ld in args.loaders.split(",") if ld]
    compiles = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    lightning_models = [m for m in args.lightning_models.split(",") if m]
    steps: int | None = None
    warmup = args.warmup
    if args.tiny:  # every code path once, in seconds; compile only when asked (minutes on a CPU)
        models, batches, lightning_models = models[:1], [8], models[:1]
        compiles = [True] if args.compile == "on" else [False]
        steps, warmup = 2, 1
    # bf16 only on the GPU: on CPUs whose AMX the VM does not enable, oneDNN's bf16 matmul dies
    # with SIGILL (ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 avoids it); the CPU smoke runs fp32.
    bf16 = on_gpu and torch.cuda.is_bf16_supported()
    channels_last = on_gpu
    if on_gpu:
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")

    peak_dtype = torch.bfloat16 if bf16 else torch.float32
    peak = matmul_peak_tflops(device, peak_dtype, n=8192 if on_gpu else 1024, iters=20 if on_gpu else 5)
    flops = {m: forward_flops(build_model(m)) for m in {*models, *lightning_models}}
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic(tmp, train_per_batch=10_000 if not args.tiny else 8, test=10)
        arrays = load_cifar10(tmp)

    name = "throughput-gpu" if on_gpu else "throughput-cpu"
    sampler = UtilSampler(device)
    rows = []
    try:
        for case in cases(models, batches, loaders, compiles, lightning_models):
            timer = time_lightning if case.path == "lightning" else time_bare
            print(f"{case.name} ...", file=sys.stderr, flush=True)
            where = {
                "model": case.model,
                "batch": case.batch,
                "loader": case.loader,
                "compile": case.compile,
                "path": case.path,
            }
            try:
                row = timer(
                    case,
                    arrays,
                    device,
                    bf16=bf16,
                    channels_last=channels_last,
                    warmup=warmup,
                    steps=steps,
                    min_seconds=args.min_seconds,
                    sampler=sampler,
                )
            except Exception as error:  # one broken case (a compiler error, say) must not lose the others
                if not args.keep_going:
                    raise
                rows.append({**where, "error": f"{type(error).__name__}: {error}"[:2000]})
                print(f"  FAILED: {rows[-1]['error'][:300]}", file=sys.stderr, flush=True)
            else:
                train_flops = 3 * flops[case.model]
                row["tflops"] = round(row["images_per_s"] * train_flops / 1e12, 2)
                row["mfu"] = round(row["images_per_s"] * train_flops / (peak * 1e12), 4)
                rows.append({**where, **row})
                print(
                    f"  {row['images_per_s']:.0f} img/s, MFU {row['mfu']:.1%}, util {row.get('gpu_util_mean')}",
                    file=sys.stderr,
                    flush=True,
                )
            if args.out:  # after every case: a stage stopped at its time cap still leaves what it finished
                record(
                    name,
                    summary(rows, device, bf16, channels_last, peak, peak_dtype, flops, partial=True),
                    tiny=args.tiny,
                    path=args.out,
                    echo=False,
                )
            if on_gpu:
                torch.cuda.empty_cache()
    finally:
        sampler.close()
    record(
        name,
        summary(rows, device, bf16, channels_last, peak, peak_dtype, flops, partial=False),
        tiny=args.tiny,
        path=args.out,
    )


def summary(rows, device, bf16, channels_last, peak, peak_dtype, flops, *, partial: bool) -> dict:
    done = [r for r in rows if "error" not in r]
    best18 = max((r for r in done if r["model"] == "resnet18"), key=lambda r: r["images_per_s"], default=None)
    return {
        "data": "generated (throughput does not depend on the pixels)",
        "partial": partial,
        "device": str(device),
        "precision": "bf16 autocast" if bf16 else "fp32",
        "channels_last": channels_last,
        "peak_tflops_measured": round(peak, 1),
        "peak_dtype": str(peak_dtype).removeprefix("torch."),
        "forward_gflops_per_image": {m: round(f / 1e9, 4) for m, f in flops.items()},
        "flops_note": "training FLOPs per image = 3 x forward (torch.utils.flop_counter)",
        "cases": rows,
        "best_resnet18": best18,
        "goals": {"resnet18_images_per_s": GOAL_IMAGES_PER_S, "gpu_util_pct": GOAL_GPU_UTIL},
    }


if __name__ == "__main__":
    main()
