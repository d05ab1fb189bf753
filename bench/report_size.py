"""Size and time of ``cifar-hpc report`` (one self-contained HTML file) for a large study, and how long
headless Chromium takes to open it.

Two studies of written results (nothing trains; accuracies are made up, each run has a 30-epoch
``logs/metrics.csv``): the ablation grid as submitted (``jobs/ablation.toml``: 2 models x 17 cells x 3
seeds = 102 runs, their real configs and study.json), and 1,000 generated results (``bench.collect``'s
study: 2 models x 10 cells, 1% corrupt, 1% failed). Times: the report as the command builds it
(load + aggregate + figures + HTML, best of 3, in process) and Chromium's ``--dump-dom`` of the file
and its first screen (``--screenshot``), each against an empty page's (the browser's own start-up),
medians of 3, where ``chromium`` is installed.

    python -m bench.report_size            # full: 102 and 1,000 runs, recorded to results/report.json
    python -m bench.report_size --tiny     # CI: 40 runs, nothing recorded
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.collect import write_study as write_generated_results
from bench.common import record
from cifar_hpc.report.aggregate import aggregate
from cifar_hpc.report.html import build_report
from cifar_hpc.study.grid import expand, load_grid
from cifar_hpc.study.manifest import record_submission
from cifar_hpc.study.recorded import load_study
from cifar_hpc.submit.launch import expected_runs
from cifar_hpc.training.results import METRICS_LOG, write_json_atomic

EPOCHS = 30


def write_metrics(run_dir: Path, final_acc: float, rng: random.Random, epochs: int = EPOCHS) -> None:
    """A metrics log shaped as Lightning's CSV writes it: an lr line, a val line, a train line per epoch."""
    path = run_dir / METRICS_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["epoch", "lr-SGD", "step", "train_acc", "train_loss", "val_acc", "val_loss"])
        for epoch in range(epochs):
            step = 98 * (epoch + 1) - 1
            acc = final_acc - 0.6 * 0.82**epoch + rng.gauss(0, 0.004)
            loss = 2.2 * 0.86**epoch + 0.02 + rng.gauss(0, 0.01)
            out.writerow(["", 0.2, step, "", "", "", ""])
            out.writerow([epoch, "", step, "", "", acc, 1 - acc])
            out.writerow([epoch, "", step, acc + 0.02, loss, "", ""])


def write_ablation(root: Path) -> int:
    """The ablation grid's 102 runs as if they had all completed: study.json as submit writes it, each
    run's result.json (its real config) and metrics log."""
    grid = load_grid("ablation")
    runs = expand(grid, results_dir=root.parent)
    record_submission(
        root,
        grid=grid.name,
        baseline_cell=grid.baseline_cell,
        runs=expected_runs(grid, runs),
        jobs=[],
        description=grid.description,
    )
    rng = random.Random(1)
    for i, run in enumerate(runs):
        config = {**run.config.to_dict(), "run_id": run.run_id}
        acc = 0.93 + 0.01 * (run.config.model == "resnet34") + 0.002 * (hash(run.cell) % 5) + rng.gauss(0, 0.002)
        folder = root / run.run_id
        write_json_atomic(folder / "config.json", config)
        write_json_atomic(
            folder / "result.json",
            {
                "schema": 1,
                "run_id": run.run_id,
                "status": "completed",
                "error": None,
                "config": config,
                "data": "cifar10",
                "test_acc": round(acc * 10_000) / 10_000,
                "test_images": 10_000,
                "best_val_acc": acc - 0.002,
                "epochs_run": EPOCHS,
                "wall_s": 300 + rng.random() * 30,
                "train_s": 250.0,
                "gpu_hours": 0.09,
                "gpu_util_mean": 92.0,
                "gpu_util_p95": 99.0,
                "gpu_mem_peak_mib": 5000.0,
                "train_images_per_s": 45_000.0,
                "tricks": [],
                "timing": {"train_s": 250.0 + 3 * len(run.cell) + rng.random(), "val_s": 10.0, "test_s": 2.0},
                "started_at": "2026-11-24T07:00:00+00:00",
                "finished_at": f"2026-11-24T08:{i % 60:02d}:00+00:00",
            },
        )
        write_metrics(folder, acc, rng)
    return len(runs)


def write_generated(root: Path, runs: int) -> int:
    """``bench.collect``'s study of ``runs`` generated results, each completed run with a metrics log."""
    write_generated_results(root, runs)
    rng = random.Random(2)
    for result in root.glob("*/result.json"):
        write_metrics(result.parent, 0.93, rng)
    return runs


def time_report(root: Path, repeats: int) -> dict:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        study = load_study(root)
        text = build_report(study, None, aggregate(study))
        best = min(best, time.perf_counter() - start)
    path = root / "report.html"
    path.write_text(text)
    figures = {"build_s": round(best, 3), "bytes": len(text.encode()), "runs": len(study.runs), "file": path}
    start = time.perf_counter()  # as a user types it: the interpreter and the imports too
    command = [sys.executable, "-m", "cifar_hpc", "report", str(root), "--no-slurm", "-o", str(root / "cli.html")]
    subprocess.run(command, capture_output=True, timeout=600, check=True)
    figures["command_s"] = round(time.perf_counter() - start, 3)
    if shutil.which("chromium"):
        empty = root / "empty.html"
        empty.write_text("<!DOCTYPE html><title>empty</title>")
        shot = f"--screenshot={root / 'shot.png'}"
        for name, page in (("report", path), ("empty_page", empty)):  # the empty page: the browser's own start-up
            figures[f"chromium_first_screen_{name}_s"] = open_time(page, repeats, shot, "--window-size=1300,900")
            figures[f"chromium_dump_dom_{name}_s"] = open_time(page, repeats, "--dump-dom")
    return figures


def open_time(page: Path, repeats: int, *how: str) -> float:
    """Median seconds of headless Chromium on a file, from its start: ``--screenshot`` (the first screen
    painted, the whole page laid out) or ``--dump-dom`` (loaded, scripts run, the whole DOM written out)."""
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", *how, page.resolve().as_uri()],
            capture_output=True,
            timeout=120,
            check=True,
        )
        walls.append(time.perf_counter() - start)
    return round(statistics.median(walls), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--keep", type=Path, help="Copy the reports written here (to look at them).")
    args = parser.parse_args()
    repeats = 1 if args.tiny else 3
    cases = (
        [("generated_40", lambda r: write_generated(r, 40))]
        if args.tiny
        else [
            ("ablation_102", write_ablation),
            ("generated_1000", lambda r: write_generated(r, 1000)),
        ]
    )
    figures: dict = {"note": f"build_s: best of {repeats} in process; command_s: once; chromium: medians of {repeats}"}
    for name, write in cases:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "runs" / name
            write(root)
            found = time_report(root, repeats)
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                shutil.copy(found["file"], args.keep / f"{name}.html")
            found.pop("file")
            figures[name] = found
    record("report", figures, tiny=args.tiny)


if __name__ == "__main__":
    main()
