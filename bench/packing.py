"""Packed runs (``cifar-hpc submit --pack N``): what training several runs per Slurm task saves.

Two measurements of the same thing, one per place:

* ``slurm`` (the default): the same study (tiny ResNet-18 runs on generated data, W&B offline, the
  ``local`` profile: 1 CPU per task, 2 tasks at once) submitted twice through ``launch.submit`` (what
  ``cifar-hpc submit`` calls) into two results folders, ``--pack 1`` (the baseline) then ``--pack N``,
  each waited for with a bound. Per configuration: allocated CPU-seconds (sacct: ElapsedRaw ×
  AllocCPUS of each task's allocation, not of its steps), total wall (submit until every task has
  ended), training seconds, queue wait, and per-run start-up, first run of a task against the later
  ones. Ratios are against the pack-1 baseline of the same run.
* ``--local`` (``bench.gpu_check``'s ``pack`` stage, and any machine without Slurm): N runs trained in
  one process by ``cifar_hpc.training.pack.run_pack`` (what a packed task calls) against N separate
  ``python -m cifar_hpc train`` processes, W&B disabled, the device loader; wall time, per-run
  start-up, training throughput, and the NVML samples (``gpu.node0.jsonl``) of a real
  ``cifar-hpc train`` on a GPU. ``--per-gpu 2,4`` also trains the same runs K at a time side by side
  on the one device (``run_shared``, what ``submit --per-gpu K`` runs): wall and aggregate images/s. It imports nothing from submitit or wandb (the GPU machine has
  neither; the pack process checks and records it).

Per-run start-up: ``timing.to_first_step_s`` of result.json (process or run start to the first
training step) where train.py records it. Until then two bounds from what every run leaves:
``to_fit_s`` (the attempt's start to its ``config.json``, written just before ``trainer.fit``:
imports, data, Trainer and model; W&B start and the sanity check come after it) from below, and
``non_training_s`` (``wall_s - train_s``: start-up plus validation, test, checkpoints, teardown)
from above. A first run's start is its process's start (from /proc, 1-s resolution: ±1 s).

    python -m bench.packing                  # 8 runs, --pack 1 vs 4: bench/results/packing-<host>.json
    python -m bench.packing --tiny           # CI: 2 runs, --pack 1 vs 2, ~1 min, records nothing
    python -m bench.packing --local --out F  # no Slurm: 4 runs packed in one process vs 4 processes
    python -m bench.packing --local --per-gpu 2,4   # ... and the same 4 runs 2 and 4 at once on the device
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import RESULTS, loadavg, record, wait_for_quiet_cpu

PREFIX = f"benchpack{os.getpid()}"
"""Every grid and job name of this run starts with it: the clean-up sweeps the queue for it."""

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}
"""Slurm states after which a task never runs again (a PREEMPTED or REQUEUED one comes back)."""

MEASURES = ("to_first_step_s", "to_fit_s", "non_training_s")


# --- per-run figures from what a run leaves (pure, apart from one stat of config.json) ------------


def _epoch(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None


def first_step_seconds(result: dict[str, Any]) -> float | None:
    """``timing.to_first_step_s`` of the run (its first attempt's, where timing is per attempt)."""
    for timing in (result.get("timing"), ((result.get("attempts") or [{}])[0]).get("timing")):
        if isinstance(timing, dict) and isinstance(timing.get("to_first_step_s"), (int, float)):
            return float(timing["to_first_step_s"])
    return None


def run_row(result: dict[str, Any], config_mtime: float | None = None) -> dict[str, Any]:
    """One run's start-up and cost; ``config_mtime``: when its ``config.json`` was written (the
    ``to_fit_s`` bound counts only for a run of one attempt: a requeue rewrites the file)."""
    attempts = result.get("attempts") or [{}]
    first = attempts[0]
    started = _epoch(first.get("started_at"))
    wall, train = result.get("wall_s"), result.get("train_s")
    one_attempt = len(attempts) == 1
    return {
        "run_id": result.get("run_id"),
        "status": result.get("status"),
        "task": first.get("slurm_job"),
        "started_at": first.get("started_at"),
        "attempts": len(attempts),
        "wall_s": wall,
        "train_s": train,
        "train_images": sum(a.get("train_images") or 0 for a in attempts),
        "train_images_per_s": result.get("train_images_per_s"),
        "to_first_step_s": first_step_seconds(result),
        "to_fit_s": round(config_mtime - started, 3) if one_attempt and config_mtime and started else None,
        "non_training_s": round(wall - train, 3) if one_attempt and wall is not None and train is not None else None,
        "timing": result.get("timing"),
        "gpu_util_mean": result.get("gpu_util_mean"),
    }


def mark_positions(rows: list[dict[str, Any]], key: str = "task") -> list[dict[str, Any]]:
    """Number the runs of each process (``key``) in the order they started: position 0 is the run
    that paid the process's start-up."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row[key], []).append(row)
    for members in groups.values():
        for position, row in enumerate(sorted(members, key=lambda r: r["started_at"] or "")):
            row["position"] = position
    return sorted(rows, key=lambda r: (str(r[key]), r["position"]))


def _median(values: Iterable[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def startup_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median start-up of first runs (position 0) and of later ones, per measure, and their ratio;
    plus the median of every number in the runs' ``timing`` blocks, where they have one."""
    out: dict[str, Any] = {}
    for label, members in (
        ("first", [r for r in rows if r["position"] == 0]),
        ("later", [r for r in rows if r["position"] > 0]),
    ):
        part: dict[str, Any] = {"runs": len(members)}
        for measure in MEASURES:
            part[measure] = _median(r[measure] for r in members)
        timings = [r["timing"] for r in members if isinstance(r.get("timing"), dict)]
        keys = sorted({k for t in timings for k, v in t.items() if isinstance(v, (int, float))})
        if keys:
            part["timing"] = {k: _median(t.get(k) for t in timings) for k in keys}
        out[label] = part
    out["later_over_first"] = {m: ratio(out["later"][m], out["first"][m]) for m in MEASURES}
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


# --- Slurm: allocations from sacct ------------------------------------------------------------


def parse_allocations(text: str) -> list[dict[str, Any]]:
    """``sacct -X -n -P --format=JobID,State,Submit,Start,End,ElapsedRaw,AllocCPUS`` rows (allocations,
    not steps): one dict per task, its allocated CPU-seconds = ElapsedRaw × AllocCPUS."""
    rows = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 7 or "[" in parts[0]:  # a pending array's "123_[2-7]" is no task yet
            continue
        job, state, submit, start, end, elapsed, cpus = parts
        rows.append(
            {
                "task": job,
                "state": state.split()[0] if state else "",
                "submit": submit,
                "start": start,
                "end": end,
                "elapsed_s": int(elapsed or 0),
                "alloc_cpus": int(cpus or 0),
                "cpu_s": int(elapsed or 0) * int(cpus or 0),
            }
        )
    return rows


def sacct_allocations(job_ids: Iterable[str]) -> list[dict[str, Any]]:
    from cifar_hpc.cluster import slurm

    fields = "JobID,State,Submit,Start,End,ElapsedRaw,AllocCPUS"
    return parse_allocations(
        slurm.call(["sacct", "-X", "-n", "-P", "-j", ",".join(sorted(job_ids)), f"--format={fields}"])
    )


def other_jobs(text: str, start: str, end: str) -> dict[str, Any]:
    """Other jobs that held CPUs of the cluster while ours ran (the local cluster is shared with other
    work), from ``sacct -a -D -X -n -P --format=JobID,JobName,Start,End,AllocCPUS`` (-D: each requeued
    incarnation too): their CPU-seconds inside [start, end]. They explain a task that waited although
    the study had room."""
    window = (datetime.fromisoformat(start), datetime.fromisoformat(end))
    jobs, cpu_s = [], 0.0
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 5 or parts[1].startswith(PREFIX):
            continue
        try:
            began, ended = datetime.fromisoformat(parts[2]), datetime.fromisoformat(parts[3])
        except ValueError:  # never started ("Unknown"), or still running ("Unknown" end)
            continue
        overlap = (min(ended, window[1]) - max(began, window[0])).total_seconds()
        if overlap > 0:
            jobs.append(parts[1])
            cpu_s += overlap * int(parts[4] or 0)
    return {"jobs": len(jobs), "names": sorted(set(jobs)), "cpu_s_in_window": round(cpu_s)}


def _slurm_seconds(a: str, b: str) -> float | None:
    try:
        return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()
    except ValueError:  # "Unknown" / "None"
        return None


def wait_for_tasks(job_ids: set[str], tasks: set[str], deadline: float) -> list[dict[str, Any]]:
    """Poll sacct until every task has ended; past ``deadline``, scancel them and raise."""
    while True:
        rows = sacct_allocations(job_ids)
        ended = {r["task"] for r in rows if r["state"] in FINAL}
        if tasks <= ended:
            return [r for r in rows if r["task"] in tasks]
        if time.monotonic() > deadline:
            cancel(job_ids)
            raise TimeoutError(f"tasks {sorted(tasks - ended)} had not ended in time; cancelled them")
        time.sleep(1.0)


def cancel(job_ids: set[str]) -> None:
    """scancel what we submitted (by id), then anything still queued under our unique prefix."""
    if job_ids:
        subprocess.run(["scancel", *sorted(job_ids)], capture_output=True, text=True, timeout=60, check=False)
    listed = subprocess.run(["squeue", "-h", "-o", "%F %j"], capture_output=True, text=True, timeout=60).stdout
    ours = {f.split()[0] for f in listed.splitlines() if len(f.split()) == 2 and f.split()[1].startswith(PREFIX)}
    if ours:
        subprocess.run(["scancel", *sorted(ours)], capture_output=True, text=True, timeout=60, check=False)


def write_grid(path: Path, data_dir: Path, runs: int) -> None:
    """The study: ``runs`` seeds of one tiny cell (tests/conftest.py's TINY_BASE), W&B offline."""
    path.write_text(f"""# generated by bench.packing: {runs} tiny ResNet-18 runs on generated data
name = "{PREFIX}"

[base]
epochs = 1
batch_size = 12
data = {{ dir = "{data_dir}", num_workers = 0, stage = true }}
augment = {{ crop = false, flip = false, rotate = false }}
wandb = {{ mode = "offline" }}

[axes]
model = ["resnet18"]
seed = {list(range(runs))}

[[cells]]
name = "baseline"
""")


def measure_slurm(grid_file: Path, results_dir: Path, pack: int, timeout_s: float, submitted: set[str]) -> dict:
    """Submit the study with ``--pack pack``, wait for it, and read sacct and the runs' results."""
    from cifar_hpc.cluster import slurm
    from cifar_hpc.cluster.profiles import load_profile
    from cifar_hpc.submit import launch
    from cifar_hpc.submit.options import SubmitOptions

    t0 = time.monotonic()
    done = launch.submit(
        str(grid_file),
        load_profile("test-cluster"),
        SubmitOptions(executor="slurm", results_dir=results_dir, pack=pack),
        say=lambda line: print(f"  {line}", file=sys.stderr),
    )
    job_ids = {str(job.job_id) for job in done.jobs}
    submitted.update(job_ids)
    tasks = {job.slurm_id(i) for job in done.jobs for i in range(len(job.run_ids))}
    allocations = wait_for_tasks(job_ids, tasks, t0 + timeout_s)
    wall = time.monotonic() - t0

    rows = []
    for path in sorted(done.folder.glob("*/result.json")):
        config = path.parent / "config.json"
        rows.append(run_row(json.loads(path.read_text()), config.stat().st_mtime if config.exists() else None))
    rows = mark_positions(rows)
    by_task: dict[str, float] = {}
    for row in rows:
        by_task[row["task"]] = by_task.get(row["task"], 0.0) + (row["wall_s"] or 0.0)
    cpu_s = sum(a["cpu_s"] for a in allocations)
    train_s = sum(r["train_s"] or 0.0 for r in rows)
    waits = [_slurm_seconds(a["submit"], a["start"]) for a in allocations]
    first, last = min(a["submit"] for a in allocations), max(a["end"] for a in allocations)
    fields = "JobID,JobName,Start,End,AllocCPUS"
    others = other_jobs(
        slurm.call(["sacct", "-a", "-D", "-X", "-n", "-P", "-S", first, "-E", last, f"--format={fields}"]), first, last
    )
    return {
        "pack": pack,
        "runs": sum(len(job.run_ids) for job in done.jobs),
        "results": len(rows),
        "completed": sum(r["status"] == "completed" for r in rows),
        "tasks": len(tasks),
        "wall_s": round(wall, 2),
        "slurm_span_s": _slurm_seconds(first, last),
        "allocated_cpu_s": cpu_s,
        "allocated_cpu_s_per_run": round(cpu_s / max(1, len(rows)), 2),
        "train_s": round(train_s, 2),
        # what packing can change: the allocation less the training (noisy on a shared machine)
        "allocated_less_train_cpu_s": round(cpu_s - train_s, 2),
        "train_share_of_allocation": ratio(train_s, cpu_s),
        "queue_wait_s_median": _median(waits),
        "other_jobs_on_the_cluster": others,
        # what a task held beyond its runs' own wall time: srun, submitit's pickles, exit
        "task_outside_runs_s": {a["task"]: round(a["elapsed_s"] - by_task.get(a["task"], 0.0), 2) for a in allocations},
        "startup": startup_summary(rows),
        "tasks_detail": allocations,
        "runs_detail": rows,
    }


def slurm_main(args: argparse.Namespace) -> None:
    if (
        shutil.which("sbatch") is None
        or subprocess.run(["sinfo", "-h"], capture_output=True, check=False).returncode != 0
    ):
        message = (
            "bench.packing: no reachable Slurm here (sbatch/sinfo); start it with slurm/start-local-cluster.sh start"
        )
        if args.tiny:
            print(f"skipped: {message}")
            return
        sys.exit(message)
    runs, pack = (2, 2) if args.tiny else (args.runs, args.pack)
    quiet = wait_for_quiet_cpu(tiny=args.tiny)
    from cifar_hpc.data.cifar_files import write_synthetic

    tmp = Path(tempfile.mkdtemp(prefix="bench-packing-"))
    # sbatch hands this environment to the jobs: W&B offline, silent, writing nothing outside tmp
    os.environ.update(
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_DIR=str(tmp),
        WANDB_CACHE_DIR=str(tmp / ".wandb-cache"),
        WANDB_CONFIG_DIR=str(tmp / ".wandb-config"),
    )
    os.environ.pop("WANDB_API_KEY", None)
    submitted: set[str] = set()
    configs = []
    try:
        write_synthetic(tmp / "data", train_per_batch=8, test=20, seed=1)
        grid_file = tmp / f"{PREFIX}.toml"
        write_grid(grid_file, tmp / "data", runs)
        for n in (1, pack):  # the baseline first, alone on the cluster, then the packed study
            print(f"== --pack {n}: {runs} runs", file=sys.stderr, flush=True)
            configs.append(measure_slurm(grid_file, tmp / f"pack{n}", n, args.timeout_min * 60, submitted))
    finally:
        cancel(submitted)
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    base, packed = configs
    figures = {
        "study": f"{runs} runs: ResNet-18, 1 epoch, batch 12, 36 training images (generated), W&B offline",
        "profile": "local (1 CPU per task, 2 tasks at once, two 1-CPU nodes)",
        "pack": pack,
        "quiet": quiet,
        "load1_at_end": loadavg()[0],
        "startup_measures": {
            "to_first_step_s": "timing.to_first_step_s of result.json (None until train.py records it)",
            "to_fit_s": "attempt start (a first run: its process start) to config.json, written before trainer.fit: a lower bound",
            "non_training_s": "wall_s - train_s: start-up + validation + test + checkpoints + teardown: an upper bound",
        },
        "configs": {f"pack{c['pack']}": c for c in configs},
        "ratios_vs_pack1": {
            "allocated_cpu_s": ratio(packed["allocated_cpu_s"], base["allocated_cpu_s"]),
            "allocated_less_train_cpu_s": ratio(
                packed["allocated_less_train_cpu_s"], base["allocated_less_train_cpu_s"]
            ),
            "wall_s": ratio(packed["wall_s"], base["wall_s"]),
            "train_s": ratio(packed["train_s"], base["train_s"]),
            "startup_later_over_first": packed["startup"]["later_over_first"],
        },
    }
    print_table(figures)
    path = None if args.tiny else RESULTS / f"packing-{platform.node().split('.')[0] or 'host'}.json"
    record("packing", figures, tiny=args.tiny, path=path, echo=False)
    if path:
        print(f"wrote {path}", file=sys.stderr)


def _fmt(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def print_table(figures: dict) -> None:
    print(
        f"{'config':8} {'runs':>4} {'tasks':>5} {'wall s':>7} {'alloc CPU-s':>11} {'train s':>7} {'alloc-train':>11}"
        f" {'others CPU-s':>12}   start-up s, first | later run of a task: to fit() (lower bound); "
        "non-training (upper bound)"
    )
    for name, c in figures["configs"].items():
        s = c["startup"]
        print(
            f"{name:8} {c['results']:>4} {c['tasks']:>5} {_fmt(c['wall_s']):>7} {c['allocated_cpu_s']:>11} "
            f"{_fmt(c['train_s']):>7} {_fmt(c['allocated_less_train_cpu_s']):>11} "
            f"{c['other_jobs_on_the_cluster']['cpu_s_in_window']:>12}"
            f"   {_fmt(s['first']['to_fit_s'])} | {_fmt(s['later']['to_fit_s'])};"
            f" {_fmt(s['first']['non_training_s'])} | {_fmt(s['later']['non_training_s'])}"
            + (
                f"; to first step {_fmt(s['first']['to_first_step_s'])} | {_fmt(s['later']['to_first_step_s'])}"
                if s["first"]["to_first_step_s"] is not None
                else ""
            )
        )
    r = figures["ratios_vs_pack1"]
    print(
        f"pack {figures['pack']} / pack 1: allocated CPU-s {_fmt(r['allocated_cpu_s'], 3)} "
        f"(less training: {_fmt(r['allocated_less_train_cpu_s'], 3)}), wall {_fmt(r['wall_s'], 3)}, "
        f"training s {_fmt(r['train_s'], 3)}; later / first run start-up: "
        + ", ".join(f"{m} {_fmt(v, 3)}" for m, v in r["startup_later_over_first"].items() if v is not None)
    )


# --- local: one process (run_pack) vs one process per run; no Slurm, submitit or wandb ---------------


def local_configs(args: argparse.Namespace, data_dir: Path, out: Path) -> list:
    from cifar_hpc.config.train_config import DataConfig, TrainConfig, WandbConfig

    return [
        TrainConfig(
            model="resnet18",
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=seed,
            accelerator="cpu" if args.tiny else "auto",
            compile=False,
            data=DataConfig(dir=str(data_dir), loader="device", num_workers=0),
            wandb=WandbConfig(mode="disabled"),
            telemetry_interval_s=0.25,
            out_dir=str(out / f"seed{seed}"),
        )
        for seed in range(args.runs)
    ]


def pack_child(spec: Path, share: int = 1) -> None:
    """``--pack-child FILE``: train FILE's configs with ``run_pack``, as one packed task does, or with
    ``--share K`` K at a time side by side (``run_shared``), as a ``--per-gpu K`` task does."""
    from cifar_hpc.config.train_config import TrainConfig
    from cifar_hpc.training.pack import run_pack, run_shared

    configs = [TrainConfig.from_dict(values) for values in json.loads(spec.read_text())]
    outcomes = run_shared(configs, share) if share > 1 else run_pack(configs)
    report = {
        "statuses": [o.get("status") for o in outcomes],
        "optional_modules_imported": [m for m in ("submitit", "wandb") if m in sys.modules],
    }
    spec.with_suffix(".out.json").write_text(json.dumps(report))


def _local_rows(configs: Sequence, processes: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for cfg, process in zip(configs, processes):
        folder = Path(cfg.out_dir)
        path, config = folder / "result.json", folder / "config.json"
        if not path.exists():
            rows.append({"run_id": None, "status": "no result", "task": process, "started_at": None})
            continue
        row = run_row(json.loads(path.read_text()), config.stat().st_mtime if config.exists() else None)
        rows.append({**row, "task": process})
    return mark_positions([r for r in rows if r["started_at"]])


def nvml_samples(folder: Path, keep: int = 400) -> dict[str, Any] | None:
    """The NVML samples a real ``cifar-hpc train`` wrote (``gpu.node0.jsonl``), summarised, and the
    first ``keep`` of them (time, GPU, util, memory, power); None where NVML wrote nothing (CPU)."""
    from cifar_hpc.training.gpu_monitor import read_samples, summarize

    rows = read_samples(folder)
    if not rows:
        return None
    fields = ("t", "gpu", "util_pct", "mem_used_mib", "power_w", "sm_clock_mhz")
    return {
        "file": "gpu.node0.jsonl",
        **summarize(folder),
        "samples": [{k: r[k] for k in fields if k in r} for r in rows[:keep]],
    }


def one_task(configs: Sequence, spec: Path, share: int, env: dict, timeout_s: float) -> dict[str, Any]:
    """``configs`` trained by one child process as one task does (``share`` > 1: that many at once):
    its exit, wall, the per-run rows and the study's images per second of that wall."""
    spec.write_text(json.dumps([cfg.to_dict() for cfg in configs]))
    t0 = time.perf_counter()
    argv = [sys.executable, "-m", "bench.packing", "--pack-child", str(spec), "--share", str(share)]
    done = subprocess.run(argv, env=env, timeout=timeout_s)
    wall = time.perf_counter() - t0
    child = spec.with_suffix(".out.json")
    streams = [f"stream{i % share}" if share > 1 else "pack" for i in range(len(configs))]
    rows = _local_rows(configs, streams)
    images = sum(r.get("train_images") or 0 for r in rows)
    return {
        "exit": done.returncode,
        "process_wall_s": round(wall, 2),
        **(json.loads(child.read_text()) if child.exists() else {}),
        "study_images_per_wall_s": round(images / wall, 1) if images else None,
        "training_images_per_s_median": _median(r["train_images_per_s"] for r in rows),
        "startup": startup_summary(rows),
        "runs_detail": rows,
    }


def local_main(args: argparse.Namespace) -> None:
    import torch

    from cifar_hpc.data.cifar_files import write_synthetic

    if args.tiny:
        args.runs, args.epochs, args.batch_size = 2, 1, 12
    on_gpu = torch.cuda.is_available() and not args.tiny
    device = torch.cuda.get_device_name(0) if on_gpu else "cpu"
    out_path = Path(args.out) if args.out else None
    child_timeout = args.timeout_min * 60
    figures: dict[str, Any] = {
        "mode": "local",
        "device": device,
        "runs": args.runs,
        "recipe": f"ResNet-18, {args.epochs} epoch(s), batch {args.batch_size}, device loader, compile off, "
        "W&B disabled, generated data",
        "order": "packed first, then the separate processes (which find the page cache warmer)",
        "per_gpu": {},  # K -> the same runs trained K at a time on the one device
    }

    def save() -> None:
        if out_path or not args.tiny:
            record("packing-local", figures, tiny=args.tiny, path=out_path, echo=False)

    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory(prefix="bench-packing-local-") as tmp_name:
        tmp = Path(tmp_name)
        per_batch, test = (8, 20) if args.tiny else (args.train_per_batch, max(1000, args.train_per_batch // 2))
        t0 = time.perf_counter()
        write_synthetic(tmp / "data", train_per_batch=per_batch, test=test, seed=1)
        figures["data"] = {
            "train_images": 5 * per_batch,
            "test_images": test,
            "write_s": round(time.perf_counter() - t0, 2),
        }

        # packed: one process, as one packed Slurm task (PackTask -> run_pack)
        packed = local_configs(args, tmp / "data", tmp / "packed")
        print(f"== packed: {args.runs} runs in one process", file=sys.stderr, flush=True)
        figures["packed"] = one_task(packed, tmp / "pack.json", 1, env, child_timeout)
        packed_wall = figures["packed"]["process_wall_s"]
        save()

        # --per-gpu K: the same runs, K processes side by side on the one device (PackTask(K) -> run_shared)
        for share in args.per_gpu:
            shared = local_configs(args, tmp / "data", tmp / f"per-gpu-{share}")
            print(f"== per-gpu {share}: {args.runs} runs, {share} at once", file=sys.stderr, flush=True)
            figures["per_gpu"][str(share)] = one_task(shared, tmp / f"share{share}.json", share, env, child_timeout)
            save()

        # unpacked: one `cifar-hpc train` process per run, as one task per run
        alone = local_configs(args, tmp / "data", tmp / "alone")
        walls, exits = [], []
        for index, cfg in enumerate(alone):
            config_file = tmp / f"alone{index}.json"
            config_file.write_text(json.dumps(cfg.to_dict()))
            print(f"== alone: run {index + 1} of {len(alone)}", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "cifar_hpc", "train", "--config", str(config_file)],
                env=env,
                timeout=child_timeout,
                stdout=subprocess.DEVNULL,
            )
            walls.append(round(time.perf_counter() - t0, 2))
            exits.append(done.returncode)
            rows_alone = _local_rows(alone[: index + 1], [f"process{i}" for i in range(index + 1)])
            figures["alone"] = {
                "exits": exits,
                "process_wall_s": walls,
                "total_wall_s": round(sum(walls), 2),
                "startup": startup_summary(rows_alone),
                "runs_detail": rows_alone,
            }
            save()
        figures["nvml_cifar_hpc_train"] = nvml_samples(Path(alone[0].out_dir)) or (
            "none: NVML unavailable (no NVIDIA GPU)" if not on_gpu else "none written"
        )

    images = sum(r.get("train_images") or 0 for r in figures["packed"]["runs_detail"])
    alone_wall = figures["alone"]["total_wall_s"]
    figures["ratios"] = {
        "wall_alone_over_packed": ratio(alone_wall, packed_wall),
        "study_throughput_packed_over_alone": ratio(alone_wall, packed_wall),
        "study_images_per_wall_s": {
            "packed": round(images / packed_wall, 1) if images else None,
            "alone": round(images / alone_wall, 1) if images and alone_wall else None,
        },
        "training_images_per_s_median": {
            "packed": _median(r["train_images_per_s"] for r in figures["packed"]["runs_detail"]),
            "alone": _median(r["train_images_per_s"] for r in figures["alone"]["runs_detail"]),
        },
        "startup_later_over_first_in_pack": figures["packed"]["startup"]["later_over_first"],
        "per_gpu_wall_over_packed": {k: ratio(v["process_wall_s"], packed_wall) for k, v in figures["per_gpu"].items()},
        "startup_later_in_pack_over_alone": {
            m: ratio(figures["packed"]["startup"]["later"][m], figures["alone"]["startup"]["first"][m])
            for m in MEASURES
        },
    }
    save()
    print(json.dumps({k: figures[k] for k in ("device", "runs", "ratios")}, indent=2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CI: 2 runs, pack 2 vs 1 (local: 2 tiny CPU runs)")
    parser.add_argument("--runs", type=int, default=None, help="runs in the study (default: 8 on Slurm, 4 local)")
    parser.add_argument("--pack", type=int, default=4, help="Slurm: runs per task of the packed study")
    parser.add_argument("--timeout-min", type=float, default=None, help="bound on each study (default 15, tiny 4)")
    parser.add_argument("--keep", action="store_true", help="Slurm: keep the temp folder (runs, logs)")
    parser.add_argument("--local", action="store_true", help="no Slurm: run_pack in one process vs one per run")
    parser.add_argument("--epochs", type=int, default=2, help="local: epochs per run")
    parser.add_argument("--batch-size", type=int, default=512, help="local: batch size")
    parser.add_argument("--train-per-batch", type=int, default=4000, help="local: generated images per batch file (x5)")
    parser.add_argument("--out", default=None, help="local: write the JSON here (also with --tiny)")
    parser.add_argument(
        "--per-gpu", default="", help="local: also train the runs K at a time on the device, for each K (e.g. 2,4)"
    )
    parser.add_argument("--pack-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--share", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pack_child:
        pack_child(Path(args.pack_child), args.share)
        return
    args.per_gpu = [int(k) for k in args.per_gpu.split(",") if k.strip()]
    if args.timeout_min is None:
        args.timeout_min = 4 if args.tiny else 15
    if args.local:
        args.runs = args.runs or 4
        local_main(args)
    else:
        args.runs = args.runs or 8
        slurm_main(args)


if __name__ == "__main__":
    main()
