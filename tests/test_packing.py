"""Packed runs (``submit --pack N``): several runs per Slurm task, one after another in one set of
processes, each with exactly the result it has alone; a failing run does not stop its pack; a
requeued pack skips its completed runs and resumes the interrupted one; a multi-node pack reuses
its process group. On the real local Slurm cluster."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import read_json, results, run_cli, write_grid
from lightning.pytorch import Callback

from cifar_hpc.base.errors import Terminated
from cifar_hpc.report import aggregate
from cifar_hpc.study import recorded, states
from cifar_hpc.study.manifest import JobRecord
from cifar_hpc.study.run_state import RunState
from cifar_hpc.submit.pack_plan import auto_pack_size, chunks
from cifar_hpc.training.run_folder import output_dir

DIVERGES = 'set = { optim = { name = "adam", lr = 1e37, schedule = "constant" } }'


def test_chunks_and_auto_pack_size():
    assert chunks([1, 2, 3, 4, 5], 2) == [(1, 2), (3, 4), (5,)]
    assert chunks([1, 2], 5) == [(1, 2)]
    # 30 min limit: 1800 - 90 (signal) - 60 (jitter) - 120 (start-up) = 1530 s usable, 80% filled
    assert auto_pack_size([100.0, 120.0, 1000.0], time_min=30, signal_delay_s=90) == int(0.8 * 1530 // 120)
    assert auto_pack_size([5000.0], time_min=30, signal_delay_s=90) == 1  # never 0
    assert auto_pack_size([], time_min=30, signal_delay_s=90) is None


def test_pack_is_validated_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = write_grid(tmp_path, "badpack", '[[cells]]\nname = "baseline"\n')
    for bad in ("0", "two", "1.5"):
        result = run_cli(["submit", "--grid", grid, "--executor", "slurm", "--pack", bad, "--dry-run"], capsys)
        assert result.code == 2 and "--pack must be a whole number >= 1 or 'auto'" in result.err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slurm
def test_a_pack_trains_each_run_as_alone_and_goes_on_after_a_failure(slurm_cluster, tmp_path, monkeypatch, capsys):
    """Three runs in one task (the middle one diverges) against the same three as three tasks:
    the same outcome per run, test accuracy equal bit for bit."""
    monkeypatch.chdir(tmp_path)
    cells = f'[[cells]]\nname = "baseline"\n[[cells]]\nname = "diverges"\n{DIVERGES}\n[[cells]]\nname = "flip"\n'
    cells += "set = { augment = { flip = true } }\n"
    grid = write_grid(tmp_path, "packed", cells, epochs=2)
    packed, alone = tmp_path / "packed-runs", tmp_path / "alone-runs"
    for folder, pack in ((packed, "3"), (alone, "1")):
        result = run_cli(["submit", "--grid", grid, "--results-dir", folder, "--pack", pack], capsys)
        assert result.code == 0, result.out + result.err
    for folder in (packed, alone):
        (record,) = (JobRecord.from_dict(job) for job in read_json(folder / "packed" / "study.json")["jobs"])
        for task in sorted({record.slurm_id(i) for i in range(len(record.run_ids))}):
            slurm_cluster.wait_job(task, timeout_s=300)

    job = read_json(packed / "packed" / "study.json")["jobs"][0]
    assert job["task_ids"] == [0, 0, 0] and not job["array"]  # one task: a plain job
    mine, theirs = results(packed / "packed"), results(alone / "packed")
    assert mine.keys() == theirs.keys() and len(mine) == 3
    for run_id, result in mine.items():
        assert result["status"] == theirs[run_id]["status"]
        assert result.get("test_acc") == theirs[run_id].get("test_acc")  # bit for bit
        assert len(result["attempts"]) == 1
        if result["status"] == "completed":  # the trained weights themselves, not only a rounded accuracy
            a, b = (
                torch.load(root / "packed" / run_id / "checkpoints" / "last.ckpt", weights_only=False)
                for root in (packed, alone)
            )
            assert a["state_dict"].keys() == b["state_dict"].keys()
            assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    by_cell = {r["config"]["cell"]: r for r in mine.values()}
    assert by_cell["diverges"]["status"] == "failed" and by_cell["flip"]["status"] == "completed"
    # each later run's attempt starts after the one before it ended: its cost is its own
    first, second = by_cell["baseline"]["attempts"][0], by_cell["flip"]["attempts"][0]
    assert second["started_at"] >= first["ended_at"]

    summary = aggregate.aggregate(
        recorded.load_study(packed / "packed"), states.ask_slurm(recorded.load_study(packed / "packed"))
    )
    (failed,) = summary.failed
    assert failed["cell"] == "diverges" and failed["log"] == JobRecord.from_dict(job).log(1)
    assert "training loss is" in failed["error"]
    retry = run_cli(
        ["submit", "--grid", grid, "--results-dir", packed, "--pack", "2", "--retry-failed", "--dry-run"], capsys
    )
    assert retry.code == 0 and "would submit 1 (failed ones)" in retry.out and "plan: 1 array, 1 task" in retry.out


@pytest.mark.slurm
@pytest.mark.slow
def test_a_requeued_pack_skips_completed_runs_and_resumes_the_interrupted_one(
    slurm_cluster, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    epochs = 4
    cells = '[[cells]]\nname = "baseline"\nset = { checkpoint_every_s = 0 }\n'  # last.ckpt every epoch
    grid = write_grid(tmp_path, "requeuepack", cells, epochs=epochs, seeds="[0, 1, 2]")
    result = run_cli(["submit", "--grid", grid, "--pack", "3"], capsys)
    assert result.code == 0, result.err
    study = tmp_path / "runs" / "requeuepack"
    job = JobRecord.from_dict(read_json(study / "study.json")["jobs"][0])
    task = job.slurm_id(0)
    first, second, third = (study / run_id for run_id in job.run_ids)
    deadline = time.monotonic() + 300
    while not (second / "checkpoints" / "last.ckpt").exists():  # the first run is done, the second under way
        assert time.monotonic() < deadline, "the second run of the pack never checkpointed"
        time.sleep(0.3)
    assert read_json(first / "result.json")["status"] == "completed"
    finished_first = read_json(first / "result.json")["finished_at"]

    # while the pack trains its second run: the third waits in it, and a resubmission adds nothing
    view = {
        s.run.run_id: s
        for s in states.classify_all(recorded.load_study(study), states.ask_slurm(recorded.load_study(study)))
    }
    assert view[third.name].state is RunState.PENDING and "waiting in its pack" in view[third.name].note
    shown = run_cli(["status", study], capsys)
    assert "1 of the pending runs wait in a running pack" in " ".join(shown.out.split()), shown.out
    again = run_cli(["submit", "--grid", grid, "--pack", "3"], capsys)
    assert again.code == 0 and "submitting 0" in again.out

    subprocess.run(["scontrol", "requeue", task], check=True, capture_output=True)
    assert slurm_cluster.wait_job(task, timeout_s=400) == "COMPLETED"
    one, two, three = (read_json(folder / "result.json") for folder in (first, second, third))
    assert one["finished_at"] == finished_first and len(one["attempts"]) == 1  # not trained again
    assert two["status"] == "completed" and len(two["attempts"]) == 2 and two["requeues"] == 1
    resumed_from = min(int(e) for e in two["lightning"]["accumulation_by_epoch"])
    assert resumed_from >= 1 and two["epochs_run"] == epochs  # resumed from its checkpoint, not from scratch
    assert three["status"] == "completed" and len(three["attempts"]) == 1, (three.get("error"), three.get("attempts"))


@pytest.mark.slurm
@pytest.mark.slow
def test_a_two_node_pack_reuses_its_process_group(slurm_cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = write_grid(tmp_path, "ddppack", '[[cells]]\nname = "baseline"\n', seeds="[0, 1]")
    result = run_cli(
        ["submit", "--grid", grid, "--nodes", "2", "--pack", "2", "--wait", "--wait-timeout-min", "8"], capsys
    )
    assert result.code == 0, result.out + result.err
    outcomes = list(results(tmp_path / "runs" / "ddppack").values())
    assert len(outcomes) == 2
    for res in outcomes:
        assert res["status"] == "completed" and res["world_size"] == 2 and res["hosts"] == ["n1", "n2"]
    # the job's log (no terminal): one progress line per epoch of each run, from global rank 0 only
    (job,) = read_json(tmp_path / "runs" / "ddppack" / "study.json")["jobs"]
    rank_zero_log = Path(JobRecord.from_dict(job).log(0))
    for res in outcomes:
        assert rank_zero_log.read_text().count(f"epoch 1/1 run {res['run_id']}: train_loss ") == 1
    other_rank_log = rank_zero_log.with_name(rank_zero_log.name.replace("_0_log", "_1_log"))
    assert "cifar_hpc.training.progress" not in other_rank_log.read_text()


@pytest.mark.slurm
@pytest.mark.slow
def test_runs_sharing_one_device_train_side_by_side_with_the_results_they_have_alone(
    slurm_cluster, tmp_path, monkeypatch, capsys
):
    """--per-gpu 2: one task, its two runs dealt to two processes that train at the same time (on
    CPU here; on a GPU they share it). Each run ends as it does alone (the local executor, one after
    another, in this process)."""
    monkeypatch.chdir(tmp_path)
    grid = write_grid(tmp_path, "shared", '[[cells]]\nname = "baseline"\n', epochs=2, seeds="[0, 1]")
    result = run_cli(["submit", "--grid", grid, "--per-gpu", "2", "--results-dir", "shared"], capsys)
    assert result.code == 0, result.out + result.err
    assert "1 task of up to 2 runs" in result.out  # a task holds at least --per-gpu runs
    (job,) = (JobRecord.from_dict(j) for j in read_json(tmp_path / "shared" / "shared" / "study.json")["jobs"])
    assert set(job.task_ids) == {0}
    assert slurm_cluster.wait_job(job.slurm_id(0), timeout_s=400) == "COMPLETED"
    alone = run_cli(["submit", "--grid", grid, "--executor", "local", "--results-dir", "alone"], capsys)
    assert alone.code == 0, alone.out + alone.err
    mine, theirs = results(tmp_path / "shared" / "shared"), results(tmp_path / "alone" / "shared")
    assert mine.keys() == theirs.keys() and len(mine) == 2
    for run_id, res in mine.items():
        assert res["status"] == "completed" and res["test_acc"] == theirs[run_id]["test_acc"]
    # side by side: each process's run started before the other's ended
    spans = sorted((r["attempts"][0]["started_at"], r["attempts"][0]["ended_at"]) for r in mine.values())
    assert spans[1][0] < spans[0][1]


@pytest.mark.slurm
def test_per_gpu_needs_runs_on_one_gpu(slurm_cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = write_grid(tmp_path, "sharednodes", '[[cells]]\nname = "baseline"\n')
    result = run_cli(
        ["submit", "--grid", grid, "--executor", "slurm", "--nodes", "2", "--per-gpu", "2", "--dry-run"], capsys
    )
    assert result.code == 2 and "--per-gpu 2 shares one GPU" in result.err


def test_a_run_failed_by_this_very_job_is_not_retried_when_the_job_comes_back(monkeypatch):
    """A pack goes on after a failed run; if the task is then requeued, the failure stands (status
    says failed) instead of training the run again; another job (--retry-failed) does retrain it."""
    from cifar_hpc.training.attempts import failed_in_this_job

    result = {"run_id": "r1", "status": "failed", "attempts": [{"slurm_job": "77_3"}]}
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert failed_in_this_job(result, "r1")
    assert not failed_in_this_job({**result, "status": "completed"}, "r1")
    assert not failed_in_this_job(result, "other-run")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "4")  # the retry's task
    assert not failed_in_this_job(result, "r1")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID")
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert not failed_in_this_job(result, "r1")  # not under Slurm: `train` retries as asked


class _TermThenConnectionLost(Callback):
    """What Slurm's requeue does to a pack (seen in CI): SIGTERM reaches every process of the job at
    once; submitit's handler lets it pass, and W&B's service, killed by the same signal, makes the
    run's next call fail with an ordinary error. ``hook`` is where it strikes: inside fit (Lightning's
    own SIGTERM notifier is up) or in set-up (it is not yet)."""

    def __init__(self, hook: str) -> None:
        self.hook = hook

    def setup(self, trainer, pl_module, stage) -> None:
        if self.hook == "setup":
            self._strike()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.hook == "fit" and batch_idx == 1:
            self._strike()

    @staticmethod
    def _strike() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        raise ConnectionResetError(104, "Connection reset by peer")


@pytest.mark.slow
@pytest.mark.parametrize("hook", ["fit", "setup"])
def test_a_sigterm_ends_the_pack_and_is_not_taken_for_a_failed_run(tiny_data, tmp_path, hook):
    """The stopped run is left to resume (no failed result), and the pack does not start its next
    run in a dying job: before this, the next run was trained into the dead W&B service and recorded
    failed, and the requeued task then kept that failure (CI, test_a_requeued_pack...)."""
    from test_train import tiny_config

    from cifar_hpc.training import train
    from cifar_hpc.training.pack import run_pack

    configs = [tiny_config(tiny_data, tmp_path / name, seed=seed) for name, seed in (("one", 0), ("two", 1))]
    strike = functools.partial(train.run, extra_callbacks=[_TermThenConnectionLost(hook)])
    bypass = signal.signal(signal.SIGTERM, lambda *_: None)  # as submitit's: SIGTERM only logged
    try:
        with pytest.raises(Terminated):
            run_pack(configs, train=strike)
    finally:
        signal.signal(signal.SIGTERM, bypass)
    one, two = (output_dir(cfg) for cfg in configs)
    assert not (one / "result.json").exists(), read_json(one / "result.json")["error"]  # it resumes, not failed
    assert read_json(one / "attempts.json")[-1]["reason"].startswith("terminated")
    assert not (two / "result.json").exists() and not (two / "attempts.json").exists()  # never started
