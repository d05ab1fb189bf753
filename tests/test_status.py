"""``cifar-hpc status``: Slurm's output parsed by pure functions (real squeue/sacct text), the
classification of runs, and the command with and without Slurm (an empty PATH)."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import run_cli
from test_collect import make_study, slurm_id

from cifar_hpc.cluster import slurm
from cifar_hpc.cluster.slurm import JobsView as SlurmView
from cifar_hpc.report import status, wandb_io
from cifar_hpc.study import recorded, states
from cifar_hpc.study.run_state import RunState

# What Slurm 22.05 prints for `squeue -h -r -o "%i %T" -j 1001,1002` (one line per array task with -r;
# without -r, pending tasks of an array come compressed as 1001_[4-6%2]).
SQUEUE_TEXT = """\
1001_3 RUNNING
1001_[4-6%2] PENDING
1002 PENDING
1001_9 COMPLETING
"""

# What `sacct -X -n -P -D --format=JobID,State -j 1001` prints (query_jobs asks for more fields after State): -D shows every attempt of a requeued
# job (oldest first); a cancelled job carries "by <uid>"; pending tasks not yet split are compressed.
SACCT_TEXT = """\
1001_0|COMPLETED
1001_1|CANCELLED by 0
1001_2|PREEMPTED
1001_2|PENDING
1001_3|RUNNING
1001_7|TIMEOUT
1001_8|OUT_OF_MEMORY
1001_[10-12]|PENDING
"""


def test_expand_job_ids():
    assert slurm.expand_job_ids("1001_[0-2,5%4]") == ["1001_0", "1001_1", "1001_2", "1001_5"]
    assert slurm.expand_job_ids("1001_[0-6:3]") == ["1001_0", "1001_3", "1001_6"]
    assert slurm.expand_job_ids("1001_7") == ["1001_7"] and slurm.expand_job_ids("1002") == ["1002"]


def test_parse_squeue_real_output():
    assert slurm.parse_squeue(SQUEUE_TEXT) == {
        "1001_3": "RUNNING",
        "1001_4": "PENDING",
        "1001_5": "PENDING",
        "1001_6": "PENDING",
        "1002": "PENDING",
        "1001_9": "COMPLETING",
    }
    assert slurm.parse_squeue("") == {}
    assert slurm.parse_squeue("slurm_load_jobs error: something\n") == {}


def test_parse_sacct_real_output():
    history = slurm.parse_sacct(SACCT_TEXT)
    assert history["1001_1"] == ("CANCELLED",)
    assert history["1001_2"] == ("PREEMPTED", "PENDING")
    assert history["1001_11"] == ("PENDING",) and history["1001_8"] == ("OUT_OF_MEMORY",)
    assert len(history) == 9


def _runner(outputs):
    """Slurm's answers as text: command name -> (returncode, stdout, stderr); absent = not installed.
    Raises like ``slurm.call`` does."""
    calls = []

    def run(args):
        calls.append(list(args))
        out = outputs.get(args[0])
        if out is None:
            raise slurm.SlurmError(f"`{args[0]}` not found", missing=True)
        if out[0] != 0:
            raise slurm.SlurmError(f"`{' '.join(args)}` failed: {out[2].strip()}", stderr=out[2])
        return out[1]

    run.calls = calls
    return run


def test_query_slurm_with_accounting():
    runner = _runner({"squeue": (0, SQUEUE_TEXT, ""), "sacct": (0, SACCT_TEXT, "")})
    view = slurm.query_jobs(["1001_3", "1001_2", "1002"], runner)
    assert view.queue["1001_3"] == "RUNNING" and view.history["1001_2"] == ("PREEMPTED", "PENDING")
    assert view.notes == ()
    assert runner.calls[0] == ["squeue", "-h", "-r", "-o", "%i %T", "-j", "1001,1002"]
    assert runner.calls[1] == [*slurm.SACCT_ARGS, "1001,1002"] and "--format=JobID,State," in runner.calls[1][5]


def test_query_slurm_without_accounting():
    runner = _runner(
        {"squeue": (0, SQUEUE_TEXT, ""), "sacct": (1, "", "sacct: error: Slurm accounting storage is disabled\n")}
    )
    view = slurm.query_jobs(["1001_3"], runner)
    assert view.queue and view.history is None
    assert "no Slurm accounting" in view.notes[0] and "Slurm accounting storage is disabled" in view.notes[0]


def test_query_slurm_invalid_job_id_means_nothing_queued():
    runner = _runner({"squeue": (1, "", "slurm_load_jobs error: Invalid job id specified\n"), "sacct": (0, "", "")})
    assert slurm.query_jobs(["1001_3"], runner).queue == {}


def test_query_slurm_controller_down():
    runner = _runner(
        {
            "squeue": (1, "", "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n"),
            "sacct": (1, "", "sacct: error: Problem talking to the database: Connection refused\n"),
        }
    )
    view = slurm.query_jobs(["1"], runner)
    assert view.queue is None and view.history is None
    assert "Unable to contact slurm controller" in view.notes[0]


def test_query_slurm_not_installed():
    view = slurm.query_jobs(["1001_0"], _runner({}))
    assert view.queue is None and view.history is None and "squeue not found" in view.notes[0]


def test_slurm_call_without_slurm_on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(slurm.SlurmError, match="`squeue` not found") as raised:
        slurm.call(["squeue", "-h"])
    assert raised.value.missing


def test_slurm_call_that_hangs_gives_up_in_time(tmp_path, monkeypatch):
    hung = tmp_path / "scontrol"  # a controller that never answers
    hung.write_text("#!/bin/sh\nexec sleep 30\n")
    hung.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    with pytest.raises(slurm.SlurmError, match="no answer within 0 s"):
        slurm.call(["scontrol", "ping"], timeout_s=0.3)


def _run(job="1001_0", *, submitted=None, **fields):
    return recorded.RecordedRun(
        run_id="r",
        model="resnet18",
        cell="baseline",
        seed=0,
        slurm=recorded.SlurmTask(job, None, submitted) if job else None,
        expected=True,
        **fields,
    )


@pytest.mark.parametrize(
    "queue, history, state",
    [
        ({"1001_0": "PENDING"}, {}, "pending"),
        ({"1001_0": "PENDING"}, {"1001_0": ("PREEMPTED", "PENDING")}, "requeued"),
        ({"1001_0": "REQUEUED"}, None, "requeued"),
        ({"1001_0": "RUNNING"}, {"1001_0": ("REQUEUED", "RUNNING")}, "running"),
        ({"1001_0": "COMPLETING"}, None, "running"),
        ({}, {"1001_0": ("TIMEOUT",)}, "failed"),
        ({}, {"1001_0": ("OUT_OF_MEMORY",)}, "failed"),
        ({}, {"1001_0": ("PREEMPTED",)}, "failed"),  # preempted with cancel, not requeued
        ({}, {"1001_0": ("COMPLETED",)}, "missing"),
        ({}, {}, "missing"),
        ({}, None, "missing"),
    ],
)
def test_classify_from_slurm(queue, history, state):
    got = states.classify(_run(), SlurmView(queue=queue, history=history))
    assert got.state == state, got


def test_classify_result_wins_and_unknown_without_slurm():
    assert states.classify(_run(), None).state == "unknown"
    assert states.classify(_run(), SlurmView(queue=None)).state == "unknown"
    assert states.classify(_run(job=None), None).state == "missing"  # local executor: nothing will come
    assert "no Slurm accounting" not in states.classify(_run(), SlurmView(queue={}, history={})).note
    assert "no Slurm accounting" in states.classify(_run(), SlurmView(queue={}, history=None)).note


@pytest.mark.parametrize(
    "ended, started, words",
    [
        ("CANCELLED", False, "cancelled before it started (Slurm job 1001_0 CANCELLED)"),
        ("CANCELLED", True, "cancelled (Slurm job 1001_0 CANCELLED)"),
        ("TIMEOUT", True, "time limit reached (Slurm job 1001_0 TIMEOUT)"),
        ("NODE_FAIL", True, "node failure (Slurm job 1001_0 NODE_FAIL)"),
        ("OUT_OF_MEMORY", True, "out of memory (Slurm job 1001_0 OUT_OF_MEMORY)"),
        ("PREEMPTED", True, "preempted (Slurm job 1001_0 PREEMPTED)"),
        ("FAILED", True, "failed, see its log (Slurm job 1001_0 FAILED)"),
    ],
)
def test_a_job_that_ended_without_a_result_says_why_in_words(ended, started, words):
    run = _run(config_written=200.0 if started else None, submitted=100.0)
    got = states.classify(run, SlurmView(queue={}, history={"1001_0": (ended,)}))
    assert (got.state, got.note) == ("failed", words)


FAILED_RESULT = {"status": "failed", "error": "training loss is nan at step 12", "config": {}}


@pytest.mark.parametrize(
    "queue, history, submitted, state, note",
    [
        # the newest job is queued or running: a retry, whatever the old result says
        ({"1001_0": "PENDING"}, {}, 300.0, "pending", "retry of a failed run: job 1001_0 PENDING"),
        ({"1001_0": "RUNNING"}, {}, 300.0, "running", "retry of a failed run: job 1001_0 RUNNING"),
        # the newest job wrote this result (it came after the submission): the result's error, even when
        # the job is back in the queue (a pack went on after the failed run and was preempted; train.run
        # does not retry a run its own job failed)
        ({"1001_0": "PENDING"}, {"1001_0": ("PREEMPTED", "PENDING")}, 100.0, "failed", "training loss is nan"),
        ({"1001_0": "RUNNING"}, {}, 100.0, "failed", "training loss is nan at step 12"),
        ({}, {"1001_0": ("FAILED",)}, 100.0, "failed", "training loss is nan at step 12"),
        ({}, {"1001_0": ("FAILED",)}, None, "failed", "training loss is nan at step 12"),  # times unknown
        # the newest job came after the result and ended without writing one: Slurm's reason, then the old error
        ({}, {"1001_0": ("CANCELLED",)}, 300.0, "failed", "cancelled before it started (Slurm job 1001_0 "),
        ({}, {"1001_0": ("CANCELLED",)}, 300.0, "failed", "; the attempt before failed: training loss is nan"),
        ({}, {"1001_0": ("COMPLETED",)}, 300.0, "failed", "COMPLETED but wrote no new result.json; the attempt"),
        (None, None, 300.0, "unknown", "may still be queued or running; result.json is an earlier attempt's"),
        (None, None, 100.0, "failed", "training loss is nan at step 12"),
    ],
)
def test_the_newest_submission_decides_over_a_failed_result(queue, history, submitted, state, note):
    run = _run(
        submitted=submitted,
        recorded=RunState.FAILED,
        result=FAILED_RESULT,
        result_written=200.0,
        config_written=150.0,
    )
    got = states.classify(run, SlurmView(queue=queue, history=history))
    assert got.state == state and note in got.note, got


def test_a_corrupt_result_with_a_queued_retry_is_pending_and_local_results_are_the_last_word():
    corrupt = _run(submitted=300.0, recorded=RunState.CORRUPT, reason="empty file", result_written=200.0)
    got = states.classify(corrupt, SlurmView(queue={"1001_0": "PENDING"}, history={}))
    assert (got.state, got.note) == ("pending", "retry of a corrupt run: job 1001_0 PENDING")
    gone = states.classify(corrupt, SlurmView(queue={}, history={"1001_0": ("CANCELLED",)}))
    assert gone.state == "corrupt" and "an earlier attempt's result.json: empty file" in gone.note
    local = _run(job=None, recorded=RunState.FAILED, result={**FAILED_RESULT, "attempts": [{}, {}, {}]})
    assert (states.classify(local, None).state, states.classify(local, None).note) == (
        "failed",
        "training loss is nan at step 12 (after 3 attempts)",
    )


def _fixed_runner():
    """squeue/sacct text saying what tests/test_collect.py's fixed_slurm() says."""
    squeue = (
        f"{slurm_id('resnet34', 'baseline', 2)} PENDING\n{slurm_id('resnet34', '+swa', 2)} RUNNING\n"
        f"{slurm_id('resnet34', '+lr_find', 2)} PENDING\n"
    )
    sacct = (
        f"{slurm_id('resnet34', '+clip', 2)}|TIMEOUT\n{slurm_id('resnet34', '+lr_find', 2)}|PREEMPTED\n"
        f"{slurm_id('resnet34', '+lr_find', 2)}|PENDING\n{slurm_id('resnet34', '+swa', 2)}|RUNNING\n"
    )
    return _runner({"squeue": (0, squeue, ""), "sacct": (0, sacct, "")})


def test_study_status_counts(tmp_path):
    root = make_study(tmp_path / "ablation")
    got = status.study_status(root, _fixed_runner())
    assert got.counts == {
        "completed": 17,
        "failed": 2,
        "corrupt": 1,
        "running": 1,
        "pending": 1,
        "requeued": 1,
        "missing": 1,
        "unknown": 0,
    }
    assert got.total == 24 and got.ended == 21 and not got.done and got.grid == "ablation"


def test_status_cli_without_slurm(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    root = make_study(tmp_path / "runs" / "ablation")
    make_study(tmp_path / "runs" / "second")
    result = run_cli(["status", tmp_path / "runs"], capsys)
    assert result.code == 0, result.err
    assert "ablation" in result.out and "second" in result.out and "preempted/requeued" in " ".join(result.out.split())
    assert "squeue not found" in result.out
    result = run_cli(["status", root, "--json"], capsys)
    data = json.loads(result.out)
    assert data["schema"] == 1 and len(data["studies"]) == 1
    counts = data["studies"][0]["counts"]
    assert counts["completed"] == 17 and counts["unknown"] == 5 and data["studies"][0]["done"] is False
    assert any("squeue not found" in n for n in data["studies"][0]["notes"])


def test_status_of_mixed_data_still_counts(tmp_path):
    root = make_study(tmp_path / "ablation")
    from test_collect import make_result

    from cifar_hpc.training.results import write_json_atomic

    write_json_atomic(root / "x" / "result.json", make_result("resnet18", "baseline", 9, 0.9, data="cifar10"))
    assert status.study_status(root, _runner({})).counts["completed"] == 18


def test_status_not_a_study(tmp_path, capsys):
    (tmp_path / "nothing").mkdir()
    result = run_cli(["status", tmp_path / "nothing"], capsys)
    assert result.code == 2 and "not a study folder" in result.err


def test_watch_ends_when_every_run_has_ended(tmp_path):
    from rich.console import Console

    root = make_study(tmp_path / "ablation")
    sacct = "".join(f"1001_{i}|FAILED\n" for i in range(24))
    with open(tmp_path / "progress.txt", "w") as out:
        done = status.watch(
            [root],
            interval_s=0.01,
            timeout_s=5,
            console=Console(file=out),
            runner=_runner({"squeue": (0, "", ""), "sacct": (0, sacct, "")}),
        )
    assert done[0].done and done[0].counts["failed"] == 2 + 4


def test_watch_times_out(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no Slurm: runs without a result stay unknown
    root = make_study(tmp_path / "ablation")
    result = run_cli(["status", root, "--watch", "--interval", "0.05", "--timeout", "0.2"], capsys)
    assert result.code == 1 and "still pending, running or unknown after 0.2 s" in result.err
    assert "ablation" in result.out


def _offline_run(folder, run_id, synced=False):
    run_dir = folder / "wandb" / f"offline-run-20261124_070000-{run_id}"
    run_dir.mkdir(parents=True)
    (run_dir / f"run-{run_id}.wandb").write_bytes(b":W&B\xe1\xbe\x00")
    if synced:
        (run_dir / f"run-{run_id}.wandb.synced").write_text("")
    return run_dir


def test_sync_skips_runs_already_synced(tmp_path):
    root = make_study(tmp_path / "ablation")
    first = _offline_run(root / next(iter(recorded.load_study(root).runs)), "aaa")
    done = _offline_run(root / "zzz", "bbb", synced=True)
    summary = _offline_run(root, "ablation-summary")
    pushed = []

    def push(paths):
        pushed.extend(paths)
        return subprocess.CompletedProcess(["wandb", "sync"], 0, "", "")

    todo, skipped, answer = wandb_io.sync_study(root, push=push, key=lambda: "WANDB_API_KEY")
    assert {r.path for r in todo} == {first, summary} and [r.path for r in skipped] == [done]
    assert set(pushed) == {first, summary} and answer.returncode == 0
    todo, _, answer = wandb_io.sync_study(root, dry_run=True, push=push)
    assert answer is None and len(pushed) == 2


def test_sync_cli_with_a_stand_in_wandb(tmp_path, capsys, monkeypatch):
    root = tmp_path / "ablation"
    _offline_run(root / "r1", "r1")
    _offline_run(root / "r2", "r2", synced=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "wandb"  # stands in for `wandb sync`: marks what it was given as synced
    fake.write_text(
        '#!/bin/sh\nPATH=/usr/bin:/bin\necho "$@" > "$(dirname "$0")/args"\nshift\n'
        'for d in "$@"; do for f in "$d"/*.wandb; do : > "$f.synced"; done; done\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("WANDB_API_KEY", "a-key-the-stand-in-ignores")  # without one, sync refuses (test_bad_input)
    result = run_cli(["sync", root, "--dry-run"], capsys)
    assert result.code == 0 and "would push" in result.out and "already synced" in result.out
    assert not (bin_dir / "args").exists()
    result = run_cli(["sync", root], capsys)
    assert result.code == 0, result.err
    assert "pushed 1 of 1 run" in result.out
    assert (bin_dir / "args").read_text().split() == [
        "sync",
        str(root / "r1" / "wandb" / "offline-run-20261124_070000-r1"),
    ]
    assert "nothing to push (2 already synced)" in run_cli(["sync", root], capsys).out


def test_an_array_cancelled_before_it_split_gives_its_state_to_every_task():
    """sacct may list a pending array cancelled as a whole under the array's own id (``573``), not
    per task: each task is that record's state, not "neither queued nor in accounting" (seen on
    the local cluster: tests/test_submit_states.py, about one run in eight)."""
    runner = _runner({"squeue": (0, "", ""), "sacct": (0, "573|CANCELLED by 0\n", "")})
    view = slurm.query_jobs(["573_0", "573_1"], runner)
    assert view.history["573_0"] == view.history["573_1"] == ("CANCELLED",)
