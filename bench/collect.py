"""Seconds for ``cifar-hpc collect`` on a study of synthetic results: loading (study.json + one
result.json per run), aggregation (pandas groupby + paired t-intervals) and rendering every format.
No Slurm is asked (``slurm=None``): its two commands cost the same whatever the study's size.

    python -m bench.collect            # full: 1,000 and 5,000 runs, recorded to results/collect.json
    python -m bench.collect --tiny     # CI: 40 runs, nothing recorded
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from bench.common import record
from cifar_hpc.report import aggregate, render
from cifar_hpc.study.recorded import load_study
from cifar_hpc.training.results import write_json_atomic

MODELS = ("resnet18", "resnet34")
CELLS = ("baseline", "+crop", "+flip", "+rotate", "+lr_find", "+swa", "+accumulate", "+clip", "+early_stop", "+all")


def write_study(root: Path, runs: int) -> None:
    """``runs`` results over 2 models x 10 cells, as many seeds as that takes; 1% corrupt, 1% failed."""
    rng = random.Random(0)
    seeds = -(-runs // (len(MODELS) * len(CELLS)))
    entries = []
    for seed in range(seeds):
        for model in MODELS:
            for c, cell in enumerate(CELLS):
                if len(entries) == runs:
                    break
                run_id = f"{len(entries):012x}"
                entries.append(
                    {"run_id": run_id, "cell": cell, "model": model, "seed": seed, "out_dir": f"runs/bench/{run_id}"}
                )
                folder = root / run_id
                roll = rng.random()
                if roll < 0.01:
                    folder.mkdir(parents=True)
                    (folder / "result.json").write_text('{"status": "compl')  # half-written
                    continue
                acc = 0.93 + 0.001 * c + rng.gauss(0, 0.002)
                write_json_atomic(
                    folder / "result.json",
                    {
                        "schema": 1,
                        "run_id": run_id,
                        "status": "failed" if roll < 0.02 else "completed",
                        "error": "loss became NaN" if roll < 0.02 else None,
                        "config": {"model": model, "seed": seed, "grid": "bench", "cell": cell},
                        "data": "generated",
                        "test_acc": acc,
                        "best_val_acc": acc - 0.003,
                        "epochs_run": 30,
                        "wall_s": 600 + rng.random() * 60,
                        "train_images_per_s": 9000 + rng.random() * 500,
                        "gpu_hours": 0.17,
                        "gpu_util_mean": 90.0,
                        "gpu_util_p95": 99.0,
                        "gpu_mem_peak_mib": 4000.0,
                        "lr_found": 0.03 if cell == "+lr_find" else None,
                        "tricks": [],
                        "finished_at": "2026-11-24T08:00:00+00:00",
                    },
                )
    write_json_atomic(
        root / "study.json", {"schema": 1, "grid": "bench", "baseline_cell": "baseline", "runs": entries, "jobs": []}
    )


def time_collect(root: Path, repeats: int) -> dict:
    best: dict[str, float] = {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        study = load_study(root)
        t1 = time.perf_counter()
        summary = aggregate.aggregate(study)
        t2 = time.perf_counter()
        for fmt in render.FORMATS:
            render.render(summary, fmt)
        t3 = time.perf_counter()
        for key, value in (
            ("load_s", t1 - t0),
            ("aggregate_s", t2 - t1),
            ("render_all_formats_s", t3 - t2),
            ("total_s", t3 - t0),
        ):
            best[key] = min(best.get(key, float("inf")), value)
    return {
        "runs": len(study.runs),
        "rows": len(summary.rows),
        "completed": summary.counts["completed"],
        **{k: round(v, 4) for k, v in best.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    sizes, repeats = ((40,), 1) if args.tiny else ((1000, 5000), 3)
    figures = {"note": f"best of {repeats}; files in a fresh temp dir (page cache warm after the first pass)"}
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            write_study(Path(tmp), size)
            figures[f"runs_{size}"] = time_collect(Path(tmp), repeats)
    record("collect", figures, tiny=args.tiny)


if __name__ == "__main__":
    main()
