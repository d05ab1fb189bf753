"""`cifar-hpc submit` on the real local Slurm cluster (two simulated nodes, accounting on).

Training runs on generated data (CIFAR-10's format): accuracies here are about that data.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import assert_golden, read_json, results, run_cli, write_grid

from cifar_hpc.base.errors import UserError
from cifar_hpc.cluster.profiles import parse_profile
from cifar_hpc.cluster.slurm import slurm_minutes
from cifar_hpc.study.grid import expand, load_grid, parse_grid
from cifar_hpc.study.manifest import JobRecord
from cifar_hpc.submit.executors import SlurmArrays, container_python, plan_arrays
from cifar_hpc.submit.launch import place_runs
from cifar_hpc.submit.local_runs import LocalRuns
from cifar_hpc.submit.options import SubmitOptions

# --- pure planning (no cluster) -----------------------------------------------------------------


def test_arrays_split_at_max_array_size_and_by_resources():
    profile = parse_profile({"gpus_per_node": 2, "models": {"resnet34": {"time_min": 300}}}, name="p")
    runs = place_runs(expand(load_grid("ablation")), profile)
    plans = plan_arrays(runs, profile, max_array_size=20)
    assert [len(p.runs) for p in plans] == [20, 20, 11, 20, 20, 11]  # 51 resnet18 runs, then 51 resnet34
    assert {p.runs[0].config.model for p in plans[:3]} == {"resnet18"} and plans[3].resources.time_min == 300
    assert sum(len(p.runs) for p in plans) == 102 and len({r.run_id for p in plans for r in p.runs}) == 102
    assert all(r.config.devices == "2" and r.config.num_nodes == 1 and r.config.accelerator == "gpu" for r in runs)


def test_grid_that_disagrees_with_the_profile_on_ddp_is_refused():
    grid = parse_grid({"base": {"devices": "4"}, "cells": [{"name": "baseline"}]}, default_name="g")
    with pytest.raises(Exception, match="must agree for DDP"):
        place_runs(expand(grid), parse_profile({"gpus_per_node": 8}, name="p"))


def test_submit_options_are_checked_when_made():
    assert SubmitOptions(pack="3").pack == 3 and SubmitOptions(pack="auto").pack == "auto"
    assert SubmitOptions(results_dir="runs").results_dir == Path("runs")
    for bad, message in [
        ({"executor": "pbs"}, "unknown executor 'pbs'; valid: auto, slurm, local"),
        ({"pack": "two"}, "--pack must be a whole number >= 1 or 'auto', got 'two'"),
        ({"parallel": 0}, "--parallel must be >= 1, got 0"),
        ({"per_gpu": 0}, "--per-gpu must be >= 1, got 0"),
        ({"max_array_size": 0}, "--max-array-size must be >= 1, got 0"),
    ]:
        with pytest.raises(UserError, match=re.escape(message)):
            SubmitOptions(**bad)


def test_each_executor_says_its_own_plan(tmp_path):
    profile = parse_profile({"gpus_per_node": 1, "time_min": 30}, name="p")
    runs = place_runs(expand(load_grid("smoke"), results_dir=tmp_path), profile)
    arrays = SlurmArrays(profile, tmp_path / "smoke", "smoke", max_array_size=100, pack=2)
    batches = arrays.plan(runs)
    tasks = (len(runs) + 1) // 2
    assert arrays.plan_lines(batches, dry_run=False) == [
        f"plan: 1 array, {tasks} tasks of up to 2 runs, up to {tasks * 0.5:.1f} GPU-hours requested (profile p)"
    ]
    cost = arrays.plan_lines(batches, dry_run=True)
    assert cost[0] == f"plan: 1 array, {tasks} tasks of up to 2 runs, profile p" and cost[1].startswith("GPU-hours:")
    here = LocalRuns(parallel=2)
    assert here.plan_lines(here.plan(runs), dry_run=True) == [f"plan: {len(runs)} runs on this machine, 2 at a time"]
    assert here.plan_lines(here.plan(runs), dry_run=False) == []
    assert here.trains_here and not arrays.trains_here and arrays.results == []


def test_slurm_time_limits_parse():
    assert [slurm_minutes(t) for t in ("UNLIMITED", "30", "1:30:00", "2-00:00:00", "05:30")] == [None, 30, 90, 2880, 6]


def test_container_commands_are_pinned():
    def profile(runtime: str, image: str, gpus: int = 2):
        return parse_profile(
            {"runtime": runtime, "image": image, "binds": ["/data", "/scratch"], "gpus_per_node": gpus}, name=runtime
        )

    mounts = ("/runs/study", "/data")
    text = (
        "\n".join(
            [
                container_python(profile("apptainer", "/c/cifar.sif"), "/work", mounts)[0],
                " ".join(container_python(profile("pyxis", "nvcr.io#cifar-hpc:latest"), "/work", mounts)[1]),
                container_python(profile("docker", "cifar-hpc:0.1.0"), "/work", mounts)[0],
                container_python(profile("podman", "cifar-hpc:0.1.0"), "/work", mounts)[0],
                container_python(profile("podman", "cifar-hpc:0.1.0", gpus=0), "/work", mounts)[0],
            ]
        )
        + "\n"
    )
    assert_golden("container_commands.txt", text)


def test_sbatch_text_is_pinned():
    profile = parse_profile(
        {
            "partition": "gpu",
            "account": "proj",
            "gpus_per_node": 2,
            "cpus_per_task": 8,
            "mem_gb": 64,
            "time_min": 120,
            "array_parallelism": 8,
            "runtime": "apptainer",
            "image": "/c/cifar.sif",
            "binds": ["/data"],
            "setup": ["module load apptainer"],
        },
        name="gpu",
    )
    runs = place_runs(expand(load_grid("smoke")), profile)
    arrays = SlurmArrays(profile, Path("/runs/smoke"), "smoke", workdir="/work")
    (batch,) = plan_arrays(runs, profile, max_array_size=1001)
    text = arrays.describe(batch, 0).split("\n", 1)[1]
    assert_golden("sbatch_smoke_gpu.txt", text)
    assert "#SBATCH --ntasks-per-node=2" in text and "#SBATCH --gpus-per-node=2" in text
    assert "#SBATCH --signal=USR2@90" in text and "#SBATCH --requeue" in text and "#SBATCH --array=0-3%4" in text


# --- on the local cluster -------------------------------------------------------------------------


FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # shaped like a W&B API key; never a real one


@pytest.mark.slurm
@pytest.mark.slow
def test_smoke_array_completes_and_resubmission_submits_nothing(slurm_cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)  # the grid says offline: nothing is sent anywhere
    grid = write_grid(
        tmp_path,
        "smokegrid",
        '[[cells]]\nname = "baseline"\n[[cells]]\nname = "+flip"\nset = { augment = { flip = true } }\n',
        seeds="[0, 1]",
    )
    result = run_cli(["submit", "--grid", grid, "--wait", "--wait-timeout-min", "8"], capsys)
    assert result.code == 0, result.out + result.err
    assert "submitted array" in result.out and "4 completed" in result.out
    study = tmp_path / "runs" / "smokegrid"
    done = results(study)
    assert len(done) == 4 and all(r["status"] == "completed" for r in done.values())
    manifest = read_json(study / "study.json")
    assert (
        len(manifest["runs"]) == 4
        and len(manifest["jobs"]) == 1
        and sorted(manifest["jobs"][0]["run_ids"]) == sorted(done)
    )
    job_id = manifest["jobs"][0]["job_id"]
    assert all(slurm_cluster.wait_job(f"{job_id}_{task}", timeout_s=60) == "COMPLETED" for task in range(4))

    again = run_cli(["submit", "--grid", grid], capsys)
    assert again.code == 0 and "4 completed" in again.out and "submitting 0" in again.out
    assert len(read_json(study / "study.json")["jobs"]) == 1  # nothing new submitted

    table = run_cli(["collect", study, "--format", "md"], capsys)
    assert table.code == 0 and "+flip" in table.out and "GENERATED" in table.out.upper()

    # the key was in the environment of the submission and of every job: no file written holds it
    # (sbatch scripts, submitit pickles, logs, results, W&B files)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".pkl" for p in written) and any(p.name.endswith(".sh") for p in written)
    assert [str(p) for p in written if FAKE_KEY.encode() in p.read_bytes()] == []


@pytest.mark.slurm
@pytest.mark.slow
def test_a_failing_task_does_not_stop_the_others(slurm_cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = write_grid(
        tmp_path,
        "failgrid",
        '[[cells]]\nname = "baseline"\n[[cells]]\nname = "diverges"\n'
        'set = { optim = { name = "adam", lr = 1e37, schedule = "constant" } }\n',
    )
    result = run_cli(["submit", "--grid", grid, "--wait", "--wait-timeout-min", "8"], capsys)
    assert result.code == 1 and "1 completed, 1 failed" in result.out
    by_cell = {r["config"]["cell"]: r for r in results(tmp_path / "runs" / "failgrid").values()}
    assert by_cell["baseline"]["status"] == "completed"
    assert by_cell["diverges"]["status"] == "failed" and "training loss is" in by_cell["diverges"]["error"]
    # one line per run as it ends, from the watcher; a failure says why and where its log is
    failed, done = by_cell["diverges"]["run_id"], by_cell["baseline"]["run_id"]
    study = (tmp_path / "runs" / "failgrid").resolve()
    job = read_json(study / "study.json")["jobs"][0]["job_id"]
    log = study / "submitit" / f"{job}_1" / f"{job}_1_0_log.out"
    assert f"FAILED {failed} diverges/resnet18/seed 0: training loss is" in result.out
    assert f"(log: {log})" in " ".join(result.out.split())  # the progress display may wrap a long line
    assert f"COMPLETED {done} baseline/resnet18/seed 0: test " in result.out
    # `logs` prints that run's submitit log, stdout and stderr in one file
    assert slurm_cluster.wait_job(f"{job}_1", timeout_s=60) in ("COMPLETED", "FAILED")
    shown = run_cli(["logs", failed[:6]], capsys)
    assert shown.code == 0 and shown.out == log.read_text() and "Starting with JobEnvironment" in shown.out
    assert f"run {failed} failed: training loss is" in shown.out  # the job's log says why, not only result.json
    retry = run_cli(["submit", "--grid", grid, "--retry-failed", "--dry-run"], capsys)
    assert retry.code == 0 and "would submit 1 (failed ones)" in retry.out


@pytest.mark.slurm
@pytest.mark.slow
def test_two_nodes_form_one_ddp_group(slurm_cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = write_grid(tmp_path, "ddpgrid", '[[cells]]\nname = "baseline"\n')
    result = run_cli(["submit", "--grid", grid, "--nodes", "2", "--wait", "--wait-timeout-min", "8"], capsys)
    assert result.code == 0, result.out + result.err
    (res,) = results(tmp_path / "runs" / "ddpgrid").values()
    assert res["status"] == "completed" and res["world_size"] == 2 and res["hosts"] == ["n1", "n2"]
    assert res["config"]["num_nodes"] == 2 and res["config"]["devices"] == "1"


@pytest.mark.slurm
@pytest.mark.parametrize("seeds", ["[0]", "[0, 1]"])
def test_dry_run_prints_the_script_a_real_submission_submits(slurm_cluster, tmp_path, monkeypatch, capsys, seeds):
    """--dry-run's sbatch text is what submitit really writes, for one run (a plain job, %j log
    paths) and for an array: pinned against the script a held submission leaves behind, so a
    change in submitit's private text builder fails here."""
    monkeypatch.chdir(tmp_path)
    grid = write_grid(tmp_path, "pinned", '[[cells]]\nname = "baseline"\n', seeds=seeds)
    profile = tmp_path / "held.toml"
    profile.write_text(
        (Path(__file__).parents[1] / "slurm" / "profiles" / "test-cluster.toml").read_text()
        + "extra_sbatch = { hold = true }\n"
    )
    dry = run_cli(["submit", "--grid", grid, "--profile", profile, "--dry-run"], capsys)
    assert dry.code == 0, dry.err
    shown = dry.out.split("--- array 0:", 1)[1].split("\n", 1)[1]
    real = run_cli(["submit", "--grid", grid, "--profile", profile], capsys)
    job = read_json(tmp_path / "runs" / "pinned" / "study.json")["jobs"][0]
    try:
        assert real.code == 0, real.err
        (script,) = (tmp_path / "runs" / "pinned" / "submitit").rglob("*_submission.sh")
        assert shown.rstrip("\n") == script.read_text().rstrip("\n")
        assert ("#SBATCH --array=0-1%2" in shown) == (seeds != "[0]")
        assert ("%j_0_log.out" in shown) == (seeds == "[0]") and job["array"] == (seeds != "[0]")
    finally:
        subprocess.run(["scancel", str(job["job_id"])], capture_output=True, timeout=30)


@pytest.mark.slurm
def test_cluster_refuses_what_it_cannot_run(slurm_cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = write_grid(tmp_path, "refused", '[[cells]]\nname = "baseline"\n')
    too_many = run_cli(["submit", "--grid", grid, "--gpus-per-node", "4"], capsys)
    assert too_many.code == 2 and "asks for 4 GPUs per node; partition debug offers 1" in too_many.err
    no_partition = run_cli(["submit", "--grid", grid, "--partition", "nope"], capsys)
    assert no_partition.code == 2 and "partition 'nope' does not exist" in no_partition.err
    split = run_cli(["submit", "--grid", grid, "--max-array-size", "1", "--dry-run"], capsys)
    assert split.code == 0 and "plan: 1 array, 1 task" in split.out
    assert not (tmp_path / "runs" / "refused" / "study.json").exists()  # nothing submitted, nothing written


@pytest.mark.slurm
@pytest.mark.slow
def test_requeued_task_resumes_from_its_checkpoint(slurm_cluster, tmp_path, monkeypatch, capsys):
    """A task killed and requeued mid-training (``scontrol requeue``: no warning signal, the worst
    case) restarts, resumes from its last epoch checkpoint under the same run id and W&B id, and
    finishes with the exact number of optimizer steps of an uninterrupted run. ``checkpoint_every_s = 0``:
    last.ckpt every epoch (the default, by time, writes none in a run of seconds before its end)."""
    monkeypatch.chdir(tmp_path)
    epochs = 8
    cells = '[[cells]]\nname = "baseline"\nset = { checkpoint_every_s = 0 }\n'
    grid = write_grid(tmp_path, "requeue", cells, epochs=epochs)
    result = run_cli(["submit", "--grid", grid], capsys)
    assert result.code == 0, result.err
    study = tmp_path / "runs" / "requeue"
    again = run_cli(["submit", "--grid", grid], capsys)  # while it is queued or running: not submitted twice
    assert again.code == 0 and "1 queued or running" in again.out and "submitting 0" in again.out
    job = read_json(study / "study.json")["jobs"][0]
    task = JobRecord.from_dict(job).slurm_id(0)  # one run: a plain job, not an array
    run_dir = study / job["run_ids"][0]
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300  # each phase gets its own: a loaded machine is slow, not broken
    while not last.exists():  # wait for the first epoch's checkpoint
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.5)
    requeued_at = time.monotonic()
    subprocess.run(["scontrol", "requeue", task], check=True, capture_output=True)
    deadline = time.monotonic() + 300
    while slurm_cluster.squeue_state(task) in ("RUNNING", "COMPLETING"):  # until the first attempt has stopped
        assert time.monotonic() < deadline, "the task was not stopped"
        time.sleep(0.2)
    epoch_at_requeue = torch.load(last, map_location="cpu", weights_only=False)["epoch"]  # stable now
    assert not (run_dir / "result.json").exists()  # a stopped attempt is not a failed run (W&B's death included)
    while len(list((run_dir / "wandb").glob("offline-run-*"))) < 2:  # the second attempt's W&B run
        assert time.monotonic() < deadline, "the requeued task never restarted"
        time.sleep(0.5)
    seconds_to_restart = time.monotonic() - requeued_at
    assert slurm_cluster.wait_job(task, timeout_s=300) == "COMPLETED"
    res = read_json(run_dir / "result.json")
    assert res["status"] == "completed" and res["requeues"] == 1 and res["run_id"] == job["run_ids"][0]
    assert res["epochs_run"] == epochs and res["lightning"]["global_step"] == epochs * 3
    resumed_from = min(int(e) for e in res["lightning"]["accumulation_by_epoch"])
    assert resumed_from == epoch_at_requeue + 1  # straight after its own last checkpoint: no whole epoch redone
    # the cost counts both attempts, the killed one up to its end (or its last heartbeat)
    first, second = res["attempts"]
    assert first["reason"].startswith(("terminated (SIGTERM", "lost: ")) and second["reason"] == "completed"
    assert first["epochs_done"] >= 1 and first["wall_s"] > 0
    assert res["wall_s"] == pytest.approx(first["wall_s"] + second["wall_s"], abs=0.01)
    assert res["train_s"] == pytest.approx(first["train_s"] + second["train_s"], abs=0.01)
    wandb_runs = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 2 and all(name.endswith(res["run_id"]) for name in wandb_runs)  # same W&B id
    # one CSV log for both attempts: the epochs the first one validated before it was stopped are kept
    with open(run_dir / "logs" / "metrics.csv") as handle:
        validated = {int(row["epoch"]) for row in csv.DictReader(handle) if row.get("val_acc")}
    assert validated == set(range(epochs)) and not list((run_dir / "logs").glob("version_*"))
    measured = {
        "epoch_checkpointed_when_killed": epoch_at_requeue,
        "resumed_at_epoch": resumed_from,
        "whole_epochs_lost": 0,
        "seconds_until_restart": round(seconds_to_restart, 1),
        "wall_s_first_attempt": first["wall_s"],
        "wall_s_reported": res["wall_s"],
    }
    print("requeue:", json.dumps(measured))


@pytest.mark.slow
def test_a_cancelled_running_task_is_cancelled_not_failed_with_a_wandb_error(
    slurm_cluster, tmp_path, monkeypatch, capsys
):
    """scancel of a training task (W&B offline, whose service the same SIGTERM kills): no failed
    result.json with W&B's "Connection lost", the attempt says it was terminated, and status,
    collect and --retry-failed all see a cancelled run."""
    monkeypatch.chdir(tmp_path)
    grid = write_grid(tmp_path, "cancel", '[[cells]]\nname = "baseline"\n', epochs=40)
    assert run_cli(["submit", "--grid", grid], capsys).code == 0
    study = tmp_path / "runs" / "cancel"
    job = read_json(study / "study.json")["jobs"][0]
    task = JobRecord.from_dict(job).slurm_id(0)
    run_dir = study / job["run_ids"][0]
    deadline = time.monotonic() + 300
    while not (run_dir / "progress.json").exists():  # an epoch trained, W&B's service up
        assert time.monotonic() < deadline, "no epoch ended"
        time.sleep(0.5)
    subprocess.run(["scancel", task], check=True, capture_output=True)
    assert slurm_cluster.wait_job(task, timeout_s=300) == "CANCELLED"
    deadline = time.monotonic() + 60  # Slurm says CANCELLED as it signals; the task then records why it stopped
    while read_json(run_dir / "attempts.json")[-1]["reason"] is None or slurm_cluster.squeue_state(task):
        assert time.monotonic() < deadline, "the cancelled attempt never said why it ended, or never left the queue"
        time.sleep(0.5)
    assert not (run_dir / "result.json").exists()
    attempts = read_json(run_dir / "attempts.json")
    assert attempts[-1]["reason"].startswith("terminated (SIGTERM"), attempts[-1]
    status = json.loads(run_cli(["status", study, "--json"], capsys).out)["studies"][0]
    assert status["counts"]["failed"] == 1
    retry = run_cli(["submit", "--grid", grid, "--retry-failed", "--dry-run"], capsys)
    assert retry.code == 0 and "would submit 1 (failed ones)" in retry.out, retry.out
    collect = run_cli(["collect", study, "--format", "json"], capsys)
    assert "cancelled" in collect.out and "Connection lost" not in collect.out


def test_local_executor_runs_the_grid_here_and_skips_finished_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = write_grid(
        tmp_path,
        "localgrid",
        '[[cells]]\nname = "baseline"\n[[cells]]\nname = "diverges"\n'
        'set = { optim = { name = "adam", lr = 1e37, schedule = "constant" } }\n',
    )
    first = run_cli(["submit", "--grid", grid, "--executor", "local"], capsys)
    assert (
        first.code == 1 and "ran 2 runs here: 1 completed, 1 failed" in first.out
    )  # one failure does not stop the other
    by_cell = {r["config"]["cell"]: r["status"] for r in results(tmp_path / "runs" / "localgrid").values()}
    assert by_cell == {"baseline": "completed", "diverges": "failed"}
    # one line per run as it ends: the failure names the run, why, and its log, which holds the run's lines
    ids = {r["config"]["cell"]: r["run_id"] for r in results(tmp_path / "runs" / "localgrid").values()}
    log = tmp_path / "runs" / "localgrid" / ids["diverges"] / "train.log"
    assert f"COMPLETED {ids['baseline']} baseline/resnet18/seed 0: test " in first.out
    assert f"FAILED {ids['diverges']} diverges/resnet18/seed 0: training loss is nan" in first.out
    assert f"(log: {log})" in first.out
    text = log.read_text()
    assert f"ERROR cifar_hpc.training.train: run {ids['diverges']} failed: training loss is nan" in text
    assert "INFO cifar_hpc: FAILED" in text and ids["baseline"] not in text
    shown = run_cli(["logs", ids["diverges"]], capsys)
    assert shown.code == 0 and shown.out == text
    rows = json.loads(run_cli(["status", "runs/localgrid", "--runs", "--json"], capsys).out)["studies"][0]["runs"]
    assert {(r["state"], r["executor"], r["log"]) for r in rows} == {
        ("completed", "local", str(log.parent.parent / ids["baseline"] / "train.log")),
        ("failed", "local", str(log)),
    }
    again = run_cli(["submit", "--grid", grid, "--executor", "local"], capsys)
    assert again.code == 0 and "submitting 0" in again.out and "1 failed run left alone" in again.out


@pytest.mark.slurm
def test_a_preempted_task_saves_at_the_step_boundary_and_loses_nothing(slurm_cluster, tmp_path, monkeypatch, capsys):
    """Slurm's requeue signal (USR2, as for a preemption or the time limit) in the middle of training:
    the step in flight finishes, last.ckpt is written there (not inside the handler, and not only the
    last one written by time, which a run of seconds does not write before its end), then submitit
    requeues the task. The requeued run resumes at that step: no batch is trained twice, and it ends
    with the weights of the same run left alone (another study, run side by side), bit for bit."""
    monkeypatch.chdir(tmp_path)
    epochs = 12
    grid = write_grid(tmp_path, "preempted", '[[cells]]\nname = "baseline"\n', epochs=epochs)
    alone = write_grid(tmp_path, "alone", '[[cells]]\nname = "baseline"\n', epochs=epochs)
    for path in (grid, alone):
        assert run_cli(["submit", "--grid", path], capsys).code == 0
    study, other = tmp_path / "runs" / "preempted", tmp_path / "runs" / "alone"
    job = read_json(study / "study.json")["jobs"][0]
    task = JobRecord.from_dict(job).slurm_id(0)
    run_dir = study / job["run_ids"][0]
    deadline = time.monotonic() + 300
    while not (run_dir / "progress.json").exists() or read_json(run_dir / "progress.json")["epoch"] < 2:
        assert time.monotonic() < deadline, "the run never trained two epochs"
        time.sleep(0.2)
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()  # by time: none yet
    subprocess.run(["scancel", "--signal=USR2", task], check=True, capture_output=True)
    other_task = JobRecord.from_dict(read_json(other / "study.json")["jobs"][0]).slurm_id(0)
    assert slurm_cluster.wait_job(task, timeout_s=400) == "COMPLETED"
    assert slurm_cluster.wait_job(other_task, timeout_s=400) == "COMPLETED"
    res = read_json(run_dir / "result.json")
    first, second = res["attempts"]
    assert res["status"] == "completed" and res["requeues"] == 1 and res["epochs_run"] == epochs
    # submitit requeues, then exits; Slurm's SIGTERM of the requeue may reach the process first
    assert first["reason"].startswith(("requeued (USR2", "terminated (SIGTERM")) and first["epochs_done"] >= 2, first
    assert first["train_images"] + second["train_images"] == epochs * 3 * 12  # nothing trained twice
    resumed = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    left_alone = torch.load(other / res["run_id"] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert all(torch.equal(resumed[k], left_alone["state_dict"][k]) for k in resumed)
    assert read_json(other / res["run_id"] / "result.json")["test_acc"] == res["test_acc"]
