"""`submit --dry-run` is a plan, not a check that fails: the plan, the sbatch text, GPU-hours
(expected from the study's completed runs, worst case), and what would stop a real submission as
warnings (exit 0, nothing written); without --dry-run the same problems stop it (exit 2, nothing
written). Nothing trains here."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from cifar_hpc.cluster.profiles import parse_profile
from cifar_hpc.study.choose import narrow
from cifar_hpc.study.grid import expand, load_grid
from cifar_hpc.submit.dry_run import completed_walls, gpu_hours
from cifar_hpc.submit.executors import plan_arrays
from cifar_hpc.submit.launch import place_runs


def _result(folder, run_id, model, seed, status="completed", wall_s=None):
    run = folder / run_id
    run.mkdir(parents=True)
    result = {"run_id": run_id, "status": status, "config": {"model": model, "seed": seed}, "test_acc": 0.5}
    if wall_s is not None:
        result["wall_s"] = wall_s
    (run / "result.json").write_text(json.dumps(result))


def test_gpu_hours_expected_from_completed_runs_and_worst_case(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = tmp_path / "runs" / "ablation"
    for seed, wall in enumerate([600.0, 900.0, 1800.0]):  # resnet18: median 900 s
        _result(study, f"r18{seed}", "resnet18", seed, wall_s=wall)
    _result(study, "r34f", "resnet34", 0, status="failed", wall_s=50.0)  # a failed run measures nothing
    walls = completed_walls(study)
    assert walls == {"resnet18": [600.0, 900.0, 1800.0]}

    profile = parse_profile({"gpus_per_node": 2, "time_min": 60, "models": {"resnet34": {"time_min": 120}}}, name="p")
    grid = narrow(load_grid("ablation"), cells="baseline,+swa", seeds="0-1")  # 4 runs per model
    batches = plan_arrays(place_runs(expand(grid), profile), profile, max_array_size=1001)
    hours = gpu_hours(batches, walls)
    # expected: 4 x 900 s x 2 GPUs (resnet18) + 4 x 120 min x 2 GPUs (resnet34, unmeasured: at its limit)
    assert (hours.expected, hours.worst) == (2.0 + 16.0, 8.0 + 16.0)
    assert hours.line() == (
        "GPU-hours: expected 18.0 (median wall time of this study's completed runs: resnet18 15.0 min over 3 "
        "runs; resnet34 not measured yet, counted at the time limit); worst case 24.0 (time limit x GPUs x tasks)"
    )
    assert gpu_hours(batches, {}).line().startswith("GPU-hours: expected: not known yet (no run of this study")
    assert gpu_hours(batches, walls, per_gpu=2).expected == 9.0  # two runs on one GPU hold it once


def test_local_dry_run_warns_of_missing_data_and_a_real_submit_stops(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no data/generated here
    dry = run_cli(["submit", "--grid", "smoke", "--executor", "local", "--dry-run"], capsys)
    assert dry.code == 0, dry.err
    assert dry.out.startswith("dry run: nothing is submitted or written\n") and "submitting" not in dry.out
    assert "would submit 4" in dry.out and "plan: 4 runs on this machine, 1 at a time" in dry.out
    assert dry.out.count("warning: no CIFAR-10 data at ") == 1
    assert dry.out.endswith("1 warning(s): a real submission would stop on it\n")
    real = run_cli(["submit", "--grid", "smoke", "--executor", "local"], capsys)
    assert real.code == 2 and real.err.startswith("cifar-hpc: error: no CIFAR-10 data at ")
    assert len(real.err.strip().splitlines()) == 1 and "submitting" not in real.out
    assert not (tmp_path / "runs").exists()  # no lock, no study.json, no folder
    no_grid = run_cli(["submit", "--grid", "smoek", "--executor", "local", "--dry-run"], capsys)
    assert no_grid.code == 2 and "unknown grid 'smoek'" in no_grid.err  # no plan at all: an error, dry or not


@pytest.mark.slurm
def test_readme_dry_run_on_a_cluster_without_the_partition_or_data(slurm_cluster, tmp_path, monkeypatch, capsys):
    """The README's `submit --grid ablation --profile gpu-example --dry-run`, on the local cluster
    (no partition `gpu`, no data): the plan with every warning, exit 0; for real: exit 2."""
    monkeypatch.chdir(tmp_path)
    dry = run_cli(["submit", "--grid", "ablation", "--profile", "gpu-example", "--dry-run"], capsys)
    assert dry.code == 0, dry.err
    assert "would submit 102" in dry.out and "submitting" not in dry.out
    assert "plan: 2 arrays, 102 tasks, profile gpu-example" in dry.out
    assert dry.out.count("#SBATCH --gpus-per-node=4") == 2 and "#SBATCH --partition=gpu" in dry.out
    assert "worst case 1224.0 (time limit x GPUs x tasks)" in dry.out  # 51 x 4 GPUs x (2 h + 4 h)
    warnings = [line for line in dry.out.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2 and "no CIFAR-10 data at" in warnings[0]
    assert warnings[1] == "warning: partition 'gpu' does not exist on this cluster (sinfo lists it not)"
    assert not (tmp_path / "runs").exists()

    real = run_cli(["submit", "--grid", "ablation", "--profile", "gpu-example"], capsys)
    assert real.code == 2 and len(real.err.strip().splitlines()) == 1
    assert "no CIFAR-10 data" in real.err and "(and 1 more problem(s); --dry-run lists them all)" in real.err
    assert not (tmp_path / "runs").exists()
