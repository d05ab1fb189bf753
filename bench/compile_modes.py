"""Eager against each ``torch.compile`` mode through ``cifar-hpc train``, cold and warm compile cache.

For each mode (``eager`` = compile off, then ``default``, ``reduce-overhead``, ``max-autotune``) two
runs of one study, each a fresh ``cifar-hpc train`` process with its own TMPDIR (as two nodes would
be): the first compiles cold, the second (another seed: another run) finds the first's kernels in the
study's ``.compile-cache``. Each run's ``result.json`` gives ``timing.compile_s``, the steady training
images/s (``train_images_per_s``) and its wall time; the JSON is written after every run, so a stage cut
short by ``bench.gpu_check`` keeps what it finished. Data is GENERATED (only times mean anything).

    python -m bench.compile_modes --out x.json          # GPU: ResNet-18, batch 512, device loader
    python -m bench.compile_modes --tiny                # CPU smoke: eager only (the bench's own code), tiny data
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import record

MODES = ("eager", "default", "reduce-overhead", "max-autotune")


def one_run(study: Path, data: Path, mode: str, seed: int, args: argparse.Namespace, node_tmp: Path) -> dict:
    """One ``cifar-hpc train`` in its own process and TMPDIR; the figures of its result.json."""
    out = study / f"{mode}-seed{seed}"
    argv = [sys.executable, "-m", "cifar_hpc", "train", "--data-dir", str(data), "--out", str(out)]
    argv += ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--seed", str(seed)]
    argv += ["--loader", "device", "--no-stage", "--wandb-mode", "disabled"]
    if mode != "eager":
        argv += ["--compile", "--set", f"compile_mode={json.dumps(mode)}"]
    node_tmp.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
    done = subprocess.run(argv, capture_output=True, text=True, env={**env, "TMPDIR": str(node_tmp)})
    if done.returncode != 0:
        return {"error": done.stderr[-1500:]}
    result = json.loads((out / "result.json").read_text())
    timing = result.get("timing") or {}
    return {
        "compile_s": timing.get("compile_s"),
        "to_first_step_s": timing.get("to_first_step_s"),
        "train_s": result.get("train_s"),
        "train_images_per_s": result.get("train_images_per_s"),
        "wall_s": result.get("wall_s"),
        "gpu_util_mean": result.get("gpu_util_mean"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke: eager, tiny data, nothing recorded")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--train-per-batch", type=int, default=10_000, help="generated images per batch file (x5)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.tiny:
        # Eager only: a cold CPU compile costs CI ~1.5 min and tests/test_gpu_time.py already compiles (and
        # times cold vs warm) through the same `cifar-hpc train --compile`; here only the bench's code runs.
        args.modes, args.epochs, args.batch_size, args.train_per_batch = "eager", 1, 8, 8

    from cifar_hpc.data.cifar_files import write_synthetic

    figures: dict = {"data": "GENERATED", "epochs": args.epochs, "batch_size": args.batch_size, "modes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_synthetic(data, train_per_batch=args.train_per_batch, test=min(1000, args.train_per_batch), seed=0)
        for mode in args.modes.split(","):
            study = Path(tmp) / "runs" / mode  # one study per mode: its own cache, cold for its first run
            runs = {}
            for label, seed in (("cold", 0), ("warm", 1)):
                runs[label] = one_run(study, data, mode, seed, args, Path(tmp) / f"node-{mode}-{seed}")
                figures["modes"][mode] = runs
                record("compile-modes", figures, tiny=args.tiny, path=args.out, echo=False)
    record("compile-modes", figures, tiny=args.tiny, path=args.out)


if __name__ == "__main__":
    main()
