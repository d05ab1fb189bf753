"""One run, one job, one state: concurrent submits, retries, and the one classifier that submit,
status and collect share, on the real local Slurm cluster.

Jobs here are held (``hold = true``: PENDING until released) or trivial ``sbatch --wrap`` jobs, so
nothing trains; every job is cancelled at the end.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from conftest import read_json, run_cli, write_grid
from slurm_cluster import FINAL_STATES

from cifar_hpc.cluster.profiles import load_profile
from cifar_hpc.study.grid import expand, load_grid
from cifar_hpc.submit import launch
from cifar_hpc.submit.launch import study_lock
from cifar_hpc.submit.options import SubmitOptions
from cifar_hpc.training.results import write_json_atomic

REPO = Path(__file__).resolve().parents[1]
LONG_AGO = "2020-01-01T00:00:00+00:00"


def _held_profile(folder: Path) -> Path:
    """The local profile, with every job held (PENDING until released): nothing trains."""
    path = folder / "held.toml"
    path.write_text(
        (REPO / "slurm" / "profiles" / "test-cluster.toml").read_text() + "extra_sbatch = { hold = true }\n"
    )
    return path


def _unique_grid(folder: Path, seeds: str) -> tuple[Path, str]:
    """A one-cell grid whose name (hence Slurm job names) no other test on the cluster shares."""
    name = f"g{uuid.uuid4().hex[:8]}"
    return write_grid(folder, name, '[[cells]]\nname = "baseline"\n', seeds=seeds), name


def _run_ids(grid: Path, results_dir: Path) -> list[str]:
    return [run.run_id for run in expand(load_grid(str(grid)), results_dir=results_dir.resolve())]


def _cli_env() -> dict[str, str]:
    """The environment of a `cifar-hpc` subprocess: this checkout's package first."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def _jobs_named(name: str) -> list[str]:
    """Slurm jobs (arrays counted once) with this job name, still in the queue."""
    out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%A"], capture_output=True, text=True, timeout=30)
    return sorted(set(out.stdout.split()))


def _cancel_named(name: str) -> None:
    subprocess.run(["scancel", "-n", name], capture_output=True, timeout=30)


def _scancel(*job_ids: str) -> None:
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True, timeout=30)


def _status(study: Path, capsys) -> dict:
    result = run_cli(["status", study, "--json"], capsys)
    assert result.code == 0, result.err
    return json.loads(result.out)["studies"][0]["counts"]


def _notes(study: Path) -> dict[str, tuple[str, str | None]]:
    """run id -> (state, note), from the one classifier with real squeue/sacct."""
    from cifar_hpc.study.recorded import load_study
    from cifar_hpc.study.states import ask_slurm, classify_all

    loaded = load_study(study, check_mixing=False)
    return {s.run.run_id: (s.state.value, s.note) for s in classify_all(loaded, ask_slurm(loaded))}


def _wait_until_ended(cluster, job: str) -> str:
    state = cluster.wait_job(job, timeout_s=120)
    deadline = time.monotonic() + 60  # squeue may still list it as CANCELLED for a moment: that is ended too
    while cluster.squeue_state(job) in ("PENDING", "RUNNING", "COMPLETING"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    # accounting records an array's tasks one by one: wait until every record of the job has ended
    # (wait_job looks at the first task only), or a task is briefly known to neither squeue nor sacct
    while True:
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-D", "-j", str(job), "--format=JobID,State"], capture_output=True, text=True
        ).stdout
        words = [line.split("|")[1].split()[0] for line in out.splitlines() if "|" in line]
        if words and all(word in FINAL_STATES for word in words):
            return state
        assert time.monotonic() < deadline, f"job {job} not ended in accounting: {out}"
        time.sleep(0.5)


def _failed_result(run_id: str, grid: str, seed: int, error: str) -> dict:
    """A result.json as train.run writes it for a run that failed, long ago."""
    return {
        "schema": 1,
        "run_id": run_id,
        "status": "failed",
        "error": error,
        "config": {"model": "resnet18", "seed": seed, "grid": grid, "cell": "baseline"},
        "data": "generated",
        "test_acc": None,
        "started_at": LONG_AGO,
        "finished_at": LONG_AGO,
    }


def _write_old(folder: Path, name: str, payload: dict) -> None:
    write_json_atomic(folder / name, payload)
    os.utime(folder / name, (1577836800, 1577836800))  # 2020-01-01: before any submission of this test


# --- defect 1 (a): concurrent submits ---------------------------------------------------------------


@pytest.mark.slurm
def test_concurrent_submits_give_each_run_exactly_one_job(slurm_cluster, tmp_path):
    """Six `cifar-hpc submit` of one grid started at the same moment: one Slurm job per run, the
    other five wait for the study's lock, then find the runs queued and submit nothing."""
    grid, name = _unique_grid(tmp_path, seeds="[0, 1]")
    profile = _held_profile(tmp_path)
    env = _cli_env()
    command = [sys.executable, "-m", "cifar_hpc", "submit", "--grid", str(grid), "--profile", str(profile)]
    try:
        procs = [
            subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(6)
        ]
        outputs = [proc.communicate(timeout=300) for proc in procs]
        assert [proc.returncode for proc in procs] == [0] * 6, outputs
        arrays = _jobs_named(f"{name}-0")
        manifest = read_json(tmp_path / "runs" / name / "study.json")
        jobs_per_run = Counter(run_id for job in manifest["jobs"] for run_id in job["run_ids"])
        print("6 concurrent submits:", json.dumps({"slurm_jobs": len(arrays), "jobs_per_run": jobs_per_run}))
        assert len(arrays) == 1, outputs
        assert jobs_per_run == {run_id: 1 for run_id in _run_ids(grid, tmp_path / "runs")}
        said = [out for out, _ in outputs]
        assert sum("submitted array" in out for out in said) == 1
        assert sum("submitting 0" in out for out in said) == 5
        assert all(out.count("waiting for another submit") <= 1 for out in said)
    finally:
        _cancel_named(f"{name}-0")


@pytest.mark.slurm
def test_a_submit_waits_for_the_lock_and_says_so_a_dry_run_does_not_wait(slurm_cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid, name = _unique_grid(tmp_path, seeds="[0]")
    profile = _held_profile(tmp_path)
    study = tmp_path / "runs" / name
    dry = run_cli(["submit", "--grid", grid, "--profile", profile, "--dry-run"], capsys)
    assert dry.code == 0 and "would submit 1" in dry.out, dry.err
    assert not study.exists()  # a dry run writes nothing, not even the lock
    try:
        with study_lock(study):  # another submit holds the study
            assert run_cli(["submit", "--grid", grid, "--profile", profile, "--dry-run"], capsys).code == 0
            proc = subprocess.Popen(
                [sys.executable, "-m", "cifar_hpc", "submit", "--grid", str(grid), "--profile", str(profile)],
                cwd=tmp_path,
                env=_cli_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            ready, _, _ = select.select([proc.stdout], [], [], 120)
            assert ready, "the waiting submit said nothing"
            first = proc.stdout.readline()
            assert first == f"waiting for another submit of {study} to finish...\n"
            time.sleep(1)
            assert proc.poll() is None and not (study / "study.json").exists()  # still waiting, nothing written
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "waiting for another submit" not in out and "submitting 1" in out and "submitted array" in out
    finally:
        _cancel_named(f"{name}-0")


# --- defect 1 (b) and 7: the newest submission decides ----------------------------------------------


@pytest.mark.slurm
def test_retry_of_a_failed_run_is_in_progress_until_its_job_ends(slurm_cluster, tmp_path, monkeypatch, capsys):
    """`submit --retry-failed` twice submits a failed run once: while its retry is queued the run is
    pending (status, collect and submit agree); when the retry is cancelled before it started, the
    run is failed again, for that reason, and --retry-failed takes it again."""
    monkeypatch.chdir(tmp_path)
    grid, name = _unique_grid(tmp_path, seeds="[0, 1]")
    profile = _held_profile(tmp_path)
    study = tmp_path / "runs" / name
    failed_before, never_ran = _run_ids(grid, tmp_path / "runs")
    _write_old(study / failed_before, "config.json", {"run_id": failed_before, "model": "resnet18", "seed": 0})
    _write_old(
        study / failed_before,
        "result.json",
        _failed_result(failed_before, name, 0, "training loss is nan at epoch 3 (step 12)"),
    )
    submitted: list[str] = []
    try:
        first = run_cli(["submit", "--grid", grid, "--profile", profile], capsys)
        assert first.code == 0, first.err
        assert "1 failed, 1 not yet run; submitting 1" in first.out and "--retry-failed resubmits them" in first.out
        submitted.append(read_json(study / "study.json")["jobs"][-1]["job_id"])
        assert _status(study, capsys) == {**_zero(), "failed": 1, "pending": 1}

        _scancel(submitted[-1])  # cancelled while pending: failed, with the real reason
        _wait_until_ended(slurm_cluster, submitted[-1])
        notes = _notes(study)
        assert notes[never_ran][0] == "failed" and "cancelled before it started" in notes[never_ran][1]
        assert notes[failed_before] == ("failed", "training loss is nan at epoch 3 (step 12)")

        retry = run_cli(["submit", "--grid", grid, "--profile", profile, "--retry-failed"], capsys)
        assert retry.code == 0 and "submitting 2 (failed ones)" in retry.out, retry.out + retry.err
        submitted.append(read_json(study / "study.json")["jobs"][-1]["job_id"])
        assert _status(study, capsys) == {**_zero(), "pending": 2}
        notes = _notes(study)
        assert notes[failed_before][0] == "pending" and "retry of a failed run" in notes[failed_before][1]
        table = run_cli(["collect", study, "--format", "json"], capsys)
        collected = json.loads(table.out)
        assert collected["failed"] == [] and {r["run_id"] for r in collected["running"]} == {failed_before, never_ran}

        again = run_cli(["submit", "--grid", grid, "--profile", profile, "--retry-failed"], capsys)
        assert again.code == 0 and "2 queued or running" in again.out and "submitting 0" in again.out, again.out
        plain = run_cli(["submit", "--grid", grid, "--profile", profile], capsys)
        assert plain.code == 0 and "submitting 0" in plain.out
        assert len(read_json(study / "study.json")["jobs"]) == 2

        _scancel(submitted[-1])  # the retry, cancelled while pending: failed again, and why
        _wait_until_ended(slurm_cluster, submitted[-1])  # an array cancelled before it split: one record
        assert _status(study, capsys) == {**_zero(), "failed": 2}
        notes = _notes(study)
        assert all(state == "failed" and "cancelled before it started" in note for state, note in notes.values())
        assert "training loss is nan" in notes[failed_before][1]  # the earlier attempt's error is kept
        dry = run_cli(["submit", "--grid", grid, "--profile", profile, "--retry-failed", "--dry-run"], capsys)
        assert "would submit 2 (failed ones)" in dry.out
    finally:
        _scancel(*submitted)


def _zero() -> dict[str, int]:
    return dict.fromkeys(("completed", "failed", "corrupt", "running", "pending", "requeued", "missing", "unknown"), 0)


# --- defect 7: one classifier for submit, status and collect -----------------------------------------


def _sbatch(*args: str) -> str:
    out = subprocess.run(
        ["sbatch", "--parsable", "-p", "debug", "-t", "5", "--mem", "100M", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout.strip().split(";")[0]


@pytest.mark.slurm
def test_submit_status_and_collect_agree_on_every_case(slurm_cluster, tmp_path, monkeypatch, capsys):
    """A study with every case a run can be in, its Slurm jobs real: submit's selection (new and
    --retry-failed), status's counts and collect's lists put each run in the same place."""
    monkeypatch.chdir(tmp_path)
    cases = [
        "completed",  # result.json completed with test_acc
        "failed_result",  # result.json says failed (NaN)
        "completed_no_acc",  # result.json completed without test_acc: corrupt, retrained
        "half_written",  # unreadable result.json: corrupt, retrained
        "cancelled_pending",  # job cancelled while pending, no result: failed
        "job_failed",  # job exited non-zero without a result: failed
        "job_completed_no_result",  # job COMPLETED, no result: missing (nothing will come)
        "pending",  # job held in the queue
        "retry_pending",  # failed result, newer job held in the queue: pending
        "never_submitted",  # in study.json, never submitted: missing
        "retry_cancelled",  # failed result, newer job cancelled while pending: failed
    ]
    grid, name = _unique_grid(tmp_path, seeds=json.dumps(list(range(len(cases)))))
    study = tmp_path / "runs" / name
    ids = dict(zip(cases, _run_ids(grid, tmp_path / "runs")))
    log = str(tmp_path / "logs" / "%j.out")
    (tmp_path / "logs").mkdir()
    jobs = {
        "cancelled_pending": _sbatch("--hold", "--wrap", "true"),
        "job_failed": _sbatch("-o", log, "--wrap", "exit 3"),
        "job_completed_no_result": _sbatch("--wrap", "true"),
        "pending": _sbatch("--hold", "--wrap", "true"),
        "retry_pending": _sbatch("--hold", "--wrap", "true"),
        "retry_cancelled": _sbatch("--hold", "--wrap", "true"),
    }
    try:
        _scancel(jobs["cancelled_pending"], jobs["retry_cancelled"])
        for case in ("cancelled_pending", "retry_cancelled", "job_failed", "job_completed_no_result"):
            _wait_until_ended(slurm_cluster, jobs[case])
        seed = {case: i for i, case in enumerate(cases)}

        def config(case: str) -> dict:
            return {"model": "resnet18", "seed": seed[case], "grid": name, "cell": "baseline"}

        for case in ("failed_result", "retry_pending", "retry_cancelled"):
            _write_old(study / ids[case], "config.json", {"run_id": ids[case], **config(case)})
            _write_old(study / ids[case], "result.json", _failed_result(ids[case], name, seed[case], "loss is NaN"))
        done = {"schema": 1, "status": "completed", "error": None, "config": config("completed"), "data": "generated"}
        write_json_atomic(
            study / ids["completed"] / "result.json", {**done, "run_id": ids["completed"], "test_acc": 0.5}
        )
        write_json_atomic(
            study / ids["completed_no_acc"] / "result.json",
            {**done, "run_id": ids["completed_no_acc"], "config": config("completed_no_acc")},
        )
        (study / ids["half_written"]).mkdir()
        (study / ids["half_written"] / "result.json").write_text('{"status": "compl')
        now = "2099-01-01T00:00:00+00:00"  # after every result written here, whatever the clocks say
        write_json_atomic(
            study / "study.json",
            {
                "schema": 1,
                "grid": name,
                "baseline_cell": "baseline",
                "runs": [{"run_id": ids[c], "cell": "baseline", "model": "resnet18", "seed": seed[c]} for c in cases],
                "jobs": [
                    {"run_ids": [ids[c]], "job_id": job, "submitted_at": now, "log_pattern": log}
                    for c, job in jobs.items()
                ],
            },
        )
        expected = {
            "completed": "completed",
            "failed_result": "failed",
            "completed_no_acc": "corrupt",
            "half_written": "corrupt",
            "cancelled_pending": "failed",
            "job_failed": "failed",
            "job_completed_no_result": "missing",
            "pending": "pending",
            "retry_pending": "pending",
            "never_submitted": "missing",
            "retry_cancelled": "failed",
        }
        notes = _notes(study)
        with capsys.disabled():  # the reasons each case shows, in the test log
            print("\n" + "\n".join(f"{case}: {notes[ids[case]]}" for case in cases))
        assert {case: notes[ids[case]][0] for case in cases} == expected
        failed = {ids[c] for c, state in expected.items() if state == "failed"}

        # status
        assert _status(study, capsys) == {**_zero(), **Counter(expected.values())}
        # collect (its failure list, with the real reasons)
        table = run_cli(["collect", study, "--format", "json"], capsys)
        assert table.code == 0, table.err
        collected = json.loads(table.out)
        assert {r["run_id"] for r in collected["failed"]} == failed
        assert {r["run_id"] for r in collected["corrupt"]} == {ids["completed_no_acc"], ids["half_written"]}
        assert {r["run_id"] for r in collected["running"]} == {ids["pending"], ids["retry_pending"]}
        reasons = {r["run_id"]: r["error"] for r in collected["failed"]}
        assert "cancelled before it started" in reasons[ids["cancelled_pending"]]
        assert "failed" in reasons[ids["job_failed"]] and "FAILED" in reasons[ids["job_failed"]]
        assert reasons[ids["failed_result"]] == "loss is NaN"
        assert "cancelled before it started" in reasons[ids["retry_cancelled"]]
        # submit: --retry-failed takes exactly the failed ones; a plain submit the corrupt and missing ones
        held = load_profile(str(_held_profile(tmp_path)))
        retry = launch.submit(
            str(grid), held, SubmitOptions(executor="slurm", results_dir=Path("runs"), retry_failed=True, dry_run=True)
        )
        assert {r.run_id for r in retry.selection.chosen} == failed
        new = launch.submit(str(grid), held, SubmitOptions(executor="slurm", results_dir=Path("runs"), dry_run=True))
        assert {r.run_id for r in new.selection.chosen} == {
            ids[c] for c in ("completed_no_acc", "half_written", "job_completed_no_result", "never_submitted")
        }
        said = run_cli(["submit", "--grid", grid, "--profile", _held_profile(tmp_path), "--dry-run"], capsys)
        assert "1 completed, 2 queued or running, 4 failed, 4 not yet run; would submit 4" in said.out, said.out
    finally:
        _scancel(*jobs.values())


# --- pure: the lock on a filesystem without flock, and runs Slurm could not tell about ---------------


def test_without_flock_the_study_lock_is_a_marker_file(tmp_path, monkeypatch):
    """Lustre mounted without ``-o flock`` refuses flock (filelock raises NotImplementedError): the
    lock falls back to an O_EXCL marker file, held while the submission runs and removed after."""
    import filelock

    class NoFlock(filelock.FileLock):
        def acquire(self, *args, **kwargs):
            raise NotImplementedError("FileSystem does not appear to support flock")

    monkeypatch.setattr(filelock, "FileLock", NoFlock)
    study = tmp_path / "runs" / "g"
    with study_lock(study):
        assert (study / "study.json.softlock").exists()
    assert not (study / "study.json.softlock").exists()


def test_runs_of_unknown_state_are_left_alone():
    """Slurm could not be asked (squeue timed out): such a run may be queued, so neither a plain
    submit nor --retry-failed submits it again."""
    from cifar_hpc.study.grid import parse_grid
    from cifar_hpc.study.run_state import RunState

    runs = expand(parse_grid({"cells": [{"name": "baseline"}], "axes": {"seed": [0, 1]}}, default_name="g"))
    states = {runs[0].run_id: RunState.UNKNOWN, runs[1].run_id: None}
    new = launch.select(runs, states, retry_failed=False)
    assert [r.run_id for r in new.chosen] == [runs[1].run_id]
    assert "1 not yet run, 1 of unknown state; submitting 1" in new.summary("g")
    assert launch.select(runs, states, retry_failed=True).chosen == ()
