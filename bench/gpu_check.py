"""One GPU check in under 8 minutes: throughput + MFU, the training pipeline's time per epoch, packed runs.

Made for a short lease of one GPU (a 10-minute slot, say): every stage runs in its own process under
its own time cap and writes its JSON as soon as it has something (the throughput stages after every
case, the training run after every epoch), so a stage cut short still returns what it finished.
Stages, in order of what matters most:

1. ``env``: GPU, versions, and whether submitit / wandb can be imported (neither is needed here).
2. ``throughput-eager``: ``bench.throughput`` at batch 512, bf16 + channels_last, compile off:
   ResNet-18 and ResNet-34 on the device loader, ResNet-18 on the torchvision loader, and ResNet-18
   through Lightning (``CifarResNet`` + ``Trainer``). The bf16 matmul peak (the MFU denominator) and
   NVML utilisation during each timed window are measured in the same process.
3. ``train``: ``bench.time_to_accuracy``, i.e. ``cifar_hpc.training.train.run`` of the `fast` recipe
   (jobs/fast.toml: device loader, compile on) for ResNet-18, a few epochs, W&B disabled, on GENERATED
   data of CIFAR-10's size: only the time per epoch means anything (accuracies on generated data say
   nothing about CIFAR-10). The run's own result.json is copied next to the figures.
4. ``compile-modes``: ``bench.compile_modes``: eager, then each ``compile_mode`` (default,
   reduce-overhead, max-autotune) through ``cifar-hpc train``, two runs each in fresh processes with
   their own TMPDIR: ``compile_s`` cold and warm (the study's shared cache), images/s, wall.
5. ``pack``: ``bench.packing --local``: a short study (4 ResNet-18 runs of 2 epochs on 20k generated
   images, device loader, compile off) trained packed, in one process by ``cifar_hpc.training.pack.run_pack``
   (what a ``submit --pack 4`` task runs), against 4 separate ``python -m cifar_hpc train``
   processes: wall time, per-run start-up (first run of a process vs later ones), throughput ratio,
   and the NVML samples (``gpu.node0.jsonl``, real ``pynvml``) of a real ``cifar-hpc train``; then the
   same 4 runs 2 and 4 at a time side by side on the GPU (``run_shared``, what ``submit --per-gpu K``
   runs): wall and aggregate images/s against the packed process.
6. ``throughput-compiled``: ResNet-18 on the device loader with ``torch.compile`` (the network).

The caps sum to 7 min 50 s (the env stage takes a few seconds). On an H200 (before ``pack`` existed)
``throughput-eager`` took 46 s, ``train`` 122 s and ``throughput-compiled`` 68 s.

    python -m bench.gpu_check --out OUT      # on the GPU: OUT/gpu-check.json (+ one JSON per stage)
    python -m bench.gpu_check                # the same into bench/results/gpu-check-<gpu>.json
    python -m bench.gpu_check --tiny         # CPU smoke in about two minutes: every stage, tiny sizes

Nothing on these paths imports submitit or wandb (``cifar_hpc.training.train`` imports Lightning's
``WandbLogger`` class, which imports wandb only when a logger is made; the runs here disable W&B;
``cifar_hpc.training.pack`` imports neither, and the packed process records which of them it imported).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS, environment

# (name, seconds allowed, arguments); the caps sum to 470 s, under 8 minutes with the env stage's few seconds.
# Ordered by what matters most: a stage that does not fit is the last one, cut at its cap.
STAGES_GPU = [
    (
        "throughput-eager",
        90,
        [
            "bench.throughput",
            "--models",
            "resnet18,resnet34",
            "--batches",
            "512",
            "--loaders",
            "device,torchvision",
            "--compile",
            "off",
            "--lightning-models",
            "resnet18",
            "--min-seconds",
            "3",
            "--keep-going",
        ],
    ),
    ("train", 100, ["bench.time_to_accuracy", "--models", "resnet18", "--epochs", "4"]),
    ("compile-modes", 100, ["bench.compile_modes", "--epochs", "2"]),
    (
        "pack",
        130,
        ["bench.packing", "--local", "--runs", "4", "--epochs", "2", "--train-per-batch", "4000", "--per-gpu", "2,4"],
    ),
    (
        "throughput-compiled",
        50,
        [
            "bench.throughput",
            "--models",
            "resnet18",
            "--batches",
            "512",
            "--loaders",
            "device",
            "--compile",
            "on",
            "--lightning-models",
            "",
            "--min-seconds",
            "3",
            "--keep-going",
        ],
    ),
]
STAGES_TINY = [
    (
        "throughput-eager",
        120,
        [
            "bench.throughput",
            "--tiny",
            "--models",
            "resnet18",
            "--loaders",
            "device",
            "--compile",
            "off",
            "--keep-going",
        ],
    ),
    ("train", 120, ["bench.time_to_accuracy", "--tiny", "--models", "resnet18"]),
    # 4 processes (packed, 2 side by side, one alone): ~1.5 min, more on a busy machine
    ("pack", 300, ["bench.packing", "--local", "--tiny", "--per-gpu", "2"]),
    ("compile-modes", 300, ["bench.compile_modes", "--tiny"]),  # eager cold and warm: ~20 s
]


def probe_imports() -> dict:
    """Which optional packages this Python has (the check needs neither submitit nor wandb)."""
    code = (
        "import importlib.util, importlib.metadata as m, json\n"
        "names = ['submitit', 'wandb', 'pynvml', 'torchvision', 'lightning', 'torchmetrics']\n"
        "dist = {'pynvml': 'nvidia-ml-py'}\n"
        "def version(n):\n"
        "    try: return m.version(dist.get(n, n))\n"
        "    except m.PackageNotFoundError: return 'present'\n"
        "print(json.dumps({n: version(n) if importlib.util.find_spec(n) else None for n in names}))"
    )
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return json.loads(probe.stdout) if probe.returncode == 0 else {"error": probe.stderr[-500:]}


def run_stage(name: str, cap_s: int, argv: list[str], out: Path, runs_dir: Path) -> dict:
    """One stage in its own process, killed at ``cap_s``; returns its status and whatever JSON it left."""
    path = out / f"gpu-check-{name}.json"
    extra = ["--out", str(path)]
    if argv[0] == "bench.time_to_accuracy":
        extra += ["--keep", str(runs_dir)]
    print(f"== {name} (cap {cap_s} s)", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    # its own session, so that a timeout also ends the DataLoader workers and compile workers it started
    proc = subprocess.Popen([sys.executable, "-m", *argv, *extra], stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        rc = proc.wait(timeout=cap_s)
        status = "ok" if rc == 0 else f"failed (exit {rc})"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()
        status = f"stopped at its {cap_s} s cap"
    seconds = time.perf_counter() - t0
    figures = json.loads(path.read_text())["figures"] if path.exists() else None
    print(f"== {name}: {status} after {seconds:.0f} s", file=sys.stderr, flush=True)
    return {"status": status, "seconds": round(seconds, 1), "cap_s": cap_s, "file": path.name, "figures": figures}


def copy_run_result(runs_dir: Path, out: Path) -> str | None:
    """The training run's own result.json next to the figures (the run folder itself stays behind)."""
    results = sorted(runs_dir.glob("*/result.json"))
    if not results:
        return None
    target = out / "gpu-check-train-result.json"
    target.write_text(results[0].read_text())
    return target.name


def headline(stages: dict) -> dict:
    """The figures the README quotes, pulled out of the stages (None where a stage left nothing)."""
    rows = []
    for name in ("throughput-eager", "throughput-compiled"):
        figures = (stages.get(name) or {}).get("figures") or {}
        rows += [
            {
                k: r.get(k)
                for k in (
                    "model",
                    "loader",
                    "compile",
                    "path",
                    "batch",
                    "images_per_s",
                    "mfu",
                    "gpu_util_mean",
                    "error",
                )
                if k in r
            }
            for r in figures.get("cases", [])
        ]
    peak = next(
        (
            s["figures"]["peak_tflops_measured"]
            for s in stages.values()
            if s.get("figures") and "peak_tflops_measured" in s["figures"]
        ),
        None,
    )
    train = ((stages.get("train") or {}).get("figures") or {}).get("runs", {}).get("resnet18", {})
    return {
        "peak_tflops_measured": peak,
        "throughput": rows,
        "train_data": ((stages.get("train") or {}).get("figures") or {}).get("data"),
        "train_per_epoch_s": [r["epoch_train_s"] for r in train.get("per_epoch", [])],
        "train_steady_epoch_s": train.get("steady_epoch_train_s"),
        "train_images_per_s": train.get("train_images_per_s"),
        "train_gpu_util_mean": train.get("gpu_util_mean"),
        "train_note": "GENERATED data: only the time per epoch counts; accuracies say nothing about CIFAR-10",
        "pack": pack_headline(((stages.get("pack") or {}).get("figures")) or {}),
    }


def pack_headline(figures: dict) -> dict | None:
    """Packed vs separate processes (``bench.packing --local``): wall, start-up, NVML of a real train."""
    if not figures:
        return None
    nvml = figures.get("nvml_cifar_hpc_train")
    return {
        "runs": figures.get("runs"),
        "recipe": figures.get("recipe"),
        "packed_wall_s": (figures.get("packed") or {}).get("process_wall_s"),
        "alone_wall_s": (figures.get("alone") or {}).get("total_wall_s"),
        "ratios": figures.get("ratios"),
        "startup_packed": (figures.get("packed") or {}).get("startup"),
        "startup_alone": (figures.get("alone") or {}).get("startup"),
        "optional_modules_imported_by_pack": (figures.get("packed") or {}).get("optional_modules_imported"),
        "nvml_cifar_hpc_train": {k: v for k, v in nvml.items() if k != "samples"} if isinstance(nvml, dict) else nvml,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke: every stage at tiny sizes")
    parser.add_argument("--out", default=None, help="folder for the JSON files (default: bench/results/)")
    parser.add_argument("--skip", default="", help="stages to leave out, comma-separated")
    args = parser.parse_args(argv)

    import torch  # after argparse: --help stays fast

    on_gpu = torch.cuda.is_available()
    if not on_gpu and not args.tiny:
        sys.exit("bench.gpu_check measures a GPU and torch sees none here; --tiny exercises the code on CPU")
    gpu = torch.cuda.get_device_name(0) if on_gpu else "cpu"
    slug = gpu.lower().replace("nvidia", "").strip().split()[0] if on_gpu else "cpu"
    # --tiny records nothing (CI runs it): without --out its files go to a temp folder, not bench/results/
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="gpu-check-tiny-")) if args.tiny else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / (f"gpu-check-{slug}.json" if not args.out else "gpu-check.json")
    started = time.perf_counter()
    skip = {s for s in args.skip.split(",") if s}
    report = {"benchmark": "gpu_check", **environment(), "imports": probe_imports(), "tiny": args.tiny, "stages": {}}

    def write() -> None:
        report["wall_s"] = round(time.perf_counter() - started, 1)
        report["headline"] = headline(report["stages"])
        summary_path.write_text(json.dumps(report, indent=2) + "\n")

    write()
    with tempfile.TemporaryDirectory() as runs_dir:
        for name, cap_s, stage_argv in STAGES_TINY if args.tiny else STAGES_GPU:
            if name in skip:
                continue
            report["stages"][name] = run_stage(name, cap_s, stage_argv, out, Path(runs_dir))
            if name == "train":
                report["stages"][name]["result_file"] = copy_run_result(Path(runs_dir), out)
            write()
    print(json.dumps(report["headline"], indent=2))
    print(f"wrote {summary_path}", file=sys.stderr)
    failed = [f"{name}: {stage['status']}" for name, stage in report["stages"].items() if stage["status"] != "ok"]
    if args.tiny and failed:  # CI runs --tiny so that the stages cannot rot; on a GPU a capped stage still reports
        sys.exit("bench.gpu_check --tiny: " + "; ".join(failed))


if __name__ == "__main__":
    main()
