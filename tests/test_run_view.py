"""The per-run view: ``status --runs`` rows, ``cifar-hpc logs [-f]``, local runs known to be running
while their process lives, and the one line per run as it ends.

Everything here reads written files and real processes (a ``sleep`` stands for a local submit that is
still training); the one real training is a local submit killed as soon as it shows as running."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import assert_golden, run_cli, write_grid
from test_collect import make_study, run_id_of
from test_status import _fixed_runner

from cifar_hpc.base.errors import UserError
from cifar_hpc.cluster import processes
from cifar_hpc.report import status
from cifar_hpc.report.run_rows import end_line, rows_text
from cifar_hpc.study.recorded import load_study
from cifar_hpc.study.run_logs import pack_part
from cifar_hpc.study.run_lookup import find_run
from cifar_hpc.study.states import classify
from cifar_hpc.training.results import write_json_atomic

REPO = Path(__file__).resolve().parents[1]


# --- one line per run as it ends --------------------------------------------------------------------


def test_end_lines_name_the_run_its_accuracy_or_why_it_failed_and_its_log():
    assert (
        end_line("0a1b2c3d4e5f", "+swa", "resnet18", 2, completed=True, test_acc=0.93125)
        == "COMPLETED 0a1b2c3d4e5f +swa/resnet18/seed 2: test 93.1%"
    )
    assert (
        end_line(
            "0a1b2c3d4e5f",
            "baseline",
            "resnet34",
            0,
            completed=False,
            reason="training loss is nan at epoch 0, step 2",
            log="runs/g/0a1b2c3d4e5f/train.log",
        )
        == "FAILED 0a1b2c3d4e5f baseline/resnet34/seed 0: training loss is nan at epoch 0, step 2 "
        "(log: runs/g/0a1b2c3d4e5f/train.log)"
    )
    assert end_line("x", None, None, None, completed=False) == "FAILED x ?/?/seed ?: no reason recorded"


# --- status --runs ----------------------------------------------------------------------------------


def test_status_runs_lists_every_run_with_its_progress_attempts_slurm_id_and_log(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # log paths are shown relative to where one stands
    root = make_study(Path("runs") / "ablation")
    running = root / run_id_of("resnet34", "+swa", 2)
    write_json_atomic(  # training's per-epoch note, as the run trains (extra fields are ignored)
        running / "progress.json",
        {"run_id": running.name, "epoch": 4, "epochs": 10, "best_val_acc": 0.8125, "updated_at": "2026-11-24T09:00Z"},
    )
    write_json_atomic(running / "attempts.json", [{"started_at": "a"}, {"started_at": "b"}])
    (root / run_id_of("resnet34", "+lr_find", 2) / "progress.json").write_text('{"epoch": 3, "best')  # half-written
    rows = {row.run_id: row for row in status.study_status(root, _fixed_runner()).rows()}
    assert len(rows) == 24

    done = rows[run_id_of("resnet18", "+swa", 1)]
    assert (done.state, done.epoch, done.epochs) == ("completed", 10, 10)
    assert (done.best_val_acc, done.test_acc) == (0.9325, 0.9365)
    assert done.slurm_id.startswith("1001_") and done.log == f"runs/ablation/logs/{done.slurm_id}.out"
    training = rows[running.name]
    assert (training.state, training.epoch, training.best_val_acc, training.attempts) == ("running", 4, 0.8125, 2)
    requeued = rows[run_id_of("resnet34", "+lr_find", 2)]
    assert (requeued.state, requeued.epoch, requeued.best_val_acc) == ("requeued", None, None)  # no progress yet
    failed = rows[run_id_of("resnet18", "+lr_find", 1)]
    assert failed.state == "failed" and failed.note == "loss became NaN at step 120 (epoch 2)"
    assert rows[run_id_of("resnet34", "baseline", 2)].state == "pending"
    assert rows[run_id_of("resnet34", "+clip", 0)].state == "missing"
    assert_golden("status_runs.txt", rows_text(sorted(rows.values(), key=lambda r: (r.model, r.cell, r.seed))))


def test_status_runs_cli_prints_the_rows_and_json_gives_the_same(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no Slurm: runs without a result are unknown
    root = make_study(tmp_path / "runs" / "ablation")
    shown = run_cli(["status", root, "--runs"], capsys)
    assert shown.code == 0, shown.err
    failed = run_id_of("resnet18", "+lr_find", 1)
    line = next(line for line in shown.out.splitlines() if line.startswith(failed))
    assert line.split()[4:9] == ["failed", "9/10", "-", "-", f"1001_{10}"]
    assert f"{failed} failed: loss became NaN" in shown.out
    data = json.loads(run_cli(["status", root, "--runs", "--json"], capsys).out)
    runs = {row["run_id"]: row for row in data["studies"][0]["runs"]}
    assert len(runs) == 24 and runs[failed]["state"] == "failed" and runs[failed]["slurm_id"] == "1001_10"
    assert "runs" not in json.loads(run_cli(["status", root, "--json"], capsys).out)["studies"][0]


# --- runs that only an axis but the seed tells apart ---------------------------------------------------


def _epochs_study(root: Path) -> dict[int, str]:
    """Cell lr4e-3 of resnet18, seed 0, at epochs 1 and 2 (an axis): the first completed, the second failed."""
    from test_collect import make_result

    ids = {epochs: run_id_of("resnet18", f"lr4e-3/epochs {epochs}", 0) for epochs in (1, 2)}
    for epochs, run_id in ids.items():
        result = make_result("resnet18", "lr4e-3", 0, 0.5, status="completed" if epochs == 1 else "failed")
        result.update(run_id=run_id, config={**result["config"], "grid": "g", "epochs": epochs})
        write_json_atomic(root / run_id / "config.json", {"run_id": run_id, **result["config"]})
        write_json_atomic(root / run_id / "result.json", result)
    runs = [
        {"run_id": r, "cell": "lr4e-3", "model": "resnet18", "seed": 0, "axes": {"model": "resnet18", "epochs": e}}
        for e, r in ids.items()
    ]
    write_json_atomic(root / "study.json", {"schema": 1, "grid": "g", "baseline_cell": "lr4e-3", "runs": runs})
    return ids


def test_every_line_that_names_a_run_names_its_axes_but_the_seed(tmp_path, capsys, monkeypatch):
    from cifar_hpc.report.aggregate import aggregate
    from cifar_hpc.report.display import list_lines
    from cifar_hpc.report.run_rows import end_line_of_status

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no Slurm
    ids = _epochs_study(tmp_path / "g")
    assert (
        end_line("x", "lr4e-3", "resnet18", 0, axes={"model": "resnet18", "epochs": 2}, completed=True, test_acc=0.5)
        == "COMPLETED x lr4e-3/resnet18/epochs=2/seed 0: test 50.0%"
    )
    view = status.study_status(tmp_path / "g")
    ended = {s.run.run_id: end_line_of_status(s, None) for s in view.runs}
    assert ended[ids[1]].startswith(f"COMPLETED {ids[1]} lr4e-3/resnet18/epochs=1/seed 0: ")
    assert ended[ids[2]].startswith(f"FAILED {ids[2]} lr4e-3/resnet18/epochs=2/seed 0: ")

    table = rows_text(view.rows()).splitlines()  # status --runs: a column for the other axes
    assert table[0].split()[:5] == ["run", "cell", "model", "axes", "seed"]
    assert {line.split()[0]: line.split()[3] for line in table[1:]} == {ids[1]: "epochs=1", ids[2]: "epochs=2"}

    (failed,) = dict(list_lines(aggregate(load_study(tmp_path / "g"))))["Failed (1)"]  # collect's list
    assert failed.startswith(f"{ids[2]} lr4e-3/resnet18/epochs=2/seed 0: ")


def test_the_dry_run_names_each_run_with_its_axes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid = write_grid(tmp_path, "ep", '[[cells]]\nname = "baseline"\nset = { optim = { lr = 4e-3 } }\n')
    grid.write_text(grid.read_text().replace("seed = [0]", "seed = [0]\nepochs = [1, 2]"))
    dry = run_cli(["submit", "--grid", grid, "--executor", "local", "--dry-run"], capsys)
    assert dry.code == 0, dry.err
    lines = [line for line in dry.out.splitlines() if line.startswith("would run ")]
    assert [line.split(" ", 3)[3] for line in lines] == [
        "baseline/resnet18/epochs=1/seed 0 here",
        "baseline/resnet18/epochs=2/seed 0 here",
    ]


# --- a local submission: running while its process lives ---------------------------------------------


def _local_study(root: Path, process: processes.ProcessRef, run_ids: list[str], submitted: str) -> None:
    write_json_atomic(
        root / "study.json",
        {
            "schema": 1,
            "grid": "g",
            "baseline_cell": "baseline",
            "runs": [{"run_id": r, "cell": "baseline", "model": "resnet18", "seed": i} for i, r in enumerate(run_ids)],
            "jobs": [
                {
                    "run_ids": run_ids,
                    "submitted_at": submitted,
                    "task_ids": list(range(len(run_ids))),
                    "executor": "local",
                    "host": process.host,
                    "pid": process.pid,
                    "process_start": process.start,
                }
            ],
        },
    )


@pytest.fixture
def live_process():
    """A process that stands for a local submit still training (ended by the test, or at teardown)."""
    child = subprocess.Popen(["sleep", "300"])
    yield child
    child.kill()
    child.wait()


def _states(root: Path) -> dict[str, tuple[str, str]]:
    study = load_study(root, check_mixing=False)
    return {run_id: (classify(run, None).state.value, classify(run, None).note) for run_id, run in study.runs.items()}


def test_a_local_run_is_running_while_its_submit_lives_and_missing_once_it_is_gone(tmp_path, live_process):
    root = tmp_path / "g"
    ref = processes.ProcessRef(processes.this_process().host, live_process.pid, processes.start_token(live_process.pid))
    _local_study(root, ref, ["aaa111", "bbb222"], datetime.now(timezone.utc).isoformat(timespec="milliseconds"))
    write_json_atomic(root / "aaa111" / "config.json", {"run_id": "aaa111", "model": "resnet18", "epochs": 3})
    states = _states(root)
    assert states["aaa111"] == ("running", f"training here (pid {ref.pid} on {ref.host})")
    assert states["bbb222"][0] == "pending" and "waiting its turn" in states["bbb222"][1]

    live_process.kill()
    live_process.wait()
    states = _states(root)
    assert states["aaa111"][0] == "missing" and "ended before it did" in states["aaa111"][1]
    assert states["bbb222"][0] == "missing"


def test_a_reused_pid_or_another_host_is_not_taken_for_the_submit(tmp_path, live_process):
    root = tmp_path / "g"
    me = processes.this_process()
    other_start = processes.ProcessRef(me.host, live_process.pid, "another-boot/123")
    _local_study(root, other_start, ["aaa111"], "2026-01-01T00:00:00.000+00:00")
    assert _states(root)["aaa111"][0] == "missing"
    elsewhere = processes.ProcessRef("another-host", live_process.pid, processes.start_token(live_process.pid))
    _local_study(root, elsewhere, ["aaa111"], "2026-01-01T00:00:00.000+00:00")
    assert _states(root)["aaa111"] == (
        "unknown",
        f"no result.json; a local submit on another host (pid {live_process.pid} on another-host) runs it",
    )


@pytest.mark.slow
def test_a_local_submit_shows_its_run_running_then_missing_once_killed(tmp_path):
    """A real local submit in its own process: its run shows as running while it trains (the job is
    in study.json before training ends), as missing once the submit is killed."""
    grid = write_grid(tmp_path, "livegrid", '[[cells]]\nname = "baseline"\n', epochs=200)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    submit = subprocess.Popen(
        [sys.executable, "-m", "cifar_hpc", "submit", "--grid", str(grid), "--executor", "local"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    root = tmp_path / "runs" / "livegrid"
    try:
        deadline = time.monotonic() + 120
        seen = None
        while time.monotonic() < deadline and submit.poll() is None:
            if (root / "study.json").exists():
                seen = next(iter(status.study_status(root).runs), None)
                if seen is not None and seen.state.value == "running":
                    break
            time.sleep(0.2)
        assert seen is not None and seen.state.value == "running", seen
        assert (root / seen.run.run_id / "train.log").exists()
    finally:
        submit.send_signal(signal.SIGKILL)
        submit.wait()
    after = status.study_status(root).runs[0]
    assert after.state.value == "missing" and f"pid {submit.pid}" in after.note and "ended before it did" in after.note


# --- cifar-hpc logs -----------------------------------------------------------------------------------


def test_logs_prints_a_local_runs_log_by_id_prefix_and_refuses_an_unknown_id(tmp_path, capsys):
    root = tmp_path / "runs" / "g"
    _local_study(root, processes.ProcessRef("h", 1, None), ["aaa111", "aab222"], "2026-01-01T00:00:00.000+00:00")
    (root / "aaa111").mkdir()
    (root / "aaa111" / "train.log").write_text("epoch 1 done\nepoch 2 done\n")
    shown = run_cli(["logs", "aaa", "--results-dir", tmp_path / "runs"], capsys)
    assert (shown.code, shown.out) == (0, "epoch 1 done\nepoch 2 done\n")
    unknown = run_cli(["logs", "zzz", "--results-dir", tmp_path / "runs"], capsys)
    assert unknown.code == 2 and unknown.err.count("\n") == 1 and "cifar-hpc: error: no run 'zzz'" in unknown.err
    ambiguous = run_cli(["logs", "aa", "--results-dir", tmp_path / "runs"], capsys)
    assert ambiguous.code == 2 and "ambiguous" in ambiguous.err and "g/aaa111, g/aab222" in ambiguous.err


def _run_folder(root: Path, run_id: str, log: str = "") -> None:
    write_json_atomic(root / run_id / "config.json", {"run_id": run_id, "model": "resnet18"})
    (root / run_id / "train.log").write_text(log)


def test_a_run_is_found_by_id_across_studies_the_full_id_winning_and_each_refusal_saying_why(tmp_path, capsys):
    """One lookup (``logs``, ``train --from-run``, ``collect --plot-gpu``): a study folder or a folder of
    studies, with or without study.json, and runs standing loose beside them."""
    runs = tmp_path / "runs"
    _local_study(runs / "a", processes.ProcessRef("h", 1, None), ["abc123", "abc1234"], "2026-01-01T00:00:00+00:00")
    _run_folder(runs / "a", "abc123", "a's\n")
    _run_folder(runs / "a", "abc1234", "a's longer id\n")
    _run_folder(runs / "plain", "def456", "plain\n")  # `train --out runs/plain/...`: no study.json
    _run_folder(runs, "fed789", "loose\n")  # `train --out runs/fed789`: beside the studies
    found = {prefix: find_run(runs, prefix) for prefix in ("abc123", "abc1234", "def", "fed")}
    assert {p: (study.root.name, run.run_id) for p, (study, run) in found.items()} == {
        "abc123": ("a", "abc123"),  # the full id wins over the longer id it starts
        "abc1234": ("a", "abc1234"),
        "def": ("plain", "def456"),
        "fed": ("runs", "fed789"),
    }
    assert find_run(runs / "a", "abc1234")[1].run_id == "abc1234"  # one study named

    shutil.copytree(runs / "a", runs / "b")  # the same runs in a second study: one id, two runs
    for asked in ("abc123", "abc1234"):  # by its full id: the runs named to choose from, as STUDY/ID
        with pytest.raises(
            UserError, match=f"^run {asked} is in 2 studies: a/{asked}, b/{asked}; name one as STUDY/ID"
        ):
            find_run(runs, asked)
    assert find_run(runs / "b", "abc123")[0].root == runs / "b"  # --results-dir picks one
    shown = run_cli(["logs", "abc123", "--results-dir", runs / "b"], capsys)
    assert (shown.code, shown.out) == (0, "a's\n")

    with pytest.raises(
        UserError, match=r"^run id 'abc' is ambiguous in .*: a/abc123, a/abc1234, b/abc123, b/abc1234; give"
    ):
        find_run(runs, "abc")  # each candidate once, named by its study
    with pytest.raises(UserError) as unknown:
        find_run(runs, "0ff")
    looked = f"looked in {runs}, {runs / 'a'}, {runs / 'b'}, {runs / 'plain'};"
    assert str(unknown.value).startswith(f"no run '0ff' in {runs} ({looked}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no runs and no studies"):
        find_run(tmp_path / "empty", "abc")


def test_logs_of_a_run_not_started_says_so_and_follow_prints_until_the_run_ends(tmp_path, capsys, live_process):
    root = tmp_path / "runs" / "g"
    ref = processes.ProcessRef(processes.this_process().host, live_process.pid, processes.start_token(live_process.pid))
    _local_study(root, ref, ["aaa111"], datetime.now(timezone.utc).isoformat(timespec="milliseconds"))
    waiting = run_cli(["logs", "aaa111", "--results-dir", root], capsys)
    assert waiting.code == 0 and "has not started yet (pending" in waiting.out

    def train_then_end():  # what a run does meanwhile: starts, logs, writes its result
        time.sleep(1.0)  # after follow's first look, even on a busy machine
        write_json_atomic(root / "aaa111" / "config.json", {"run_id": "aaa111", "model": "resnet18"})
        with open(root / "aaa111" / "train.log", "a") as log:
            log.write("epoch 1 done\n")
            log.flush()
            time.sleep(0.3)
            log.write("epoch 2 done\n")
        write_json_atomic(root / "aaa111" / "result.json", {"run_id": "aaa111", "status": "completed", "test_acc": 0.5})

    trainer = threading.Thread(target=train_then_end)
    trainer.start()
    started = time.monotonic()
    followed = run_cli(["logs", "aaa111", "-f", "--interval", "0.05", "--results-dir", root], capsys)
    trainer.join()
    assert followed.code == 0 and time.monotonic() - started < 60
    assert followed.out.endswith("epoch 1 done\nepoch 2 done\n") and "waiting for run aaa111 to start" in followed.out


def test_a_packs_log_is_cut_at_its_runs_markers():
    log = [
        "submitit INFO: Starting with JobEnvironment\n",
        "INFO cifar_hpc.training.pack: pack: run 1 of 2: aaa111\n",
        "epoch 1 of aaa\n",
        "INFO cifar_hpc.training.pack: pack: run 2 of 2: bbb222\n",
        "epoch 1 of bbb\n",
        "INFO cifar_hpc.training.pack: pack: run 1 of 2: aaa111\n",  # requeued: the pack starts again
        "resumed aaa\n",
    ]
    assert pack_part(log, "aaa111")[0] == [log[1], log[2], log[5], log[6]]
    kept, inside = pack_part(log[:5], "bbb222")
    assert kept == log[3:5] and inside and pack_part(["more of bbb\n"], "bbb222", inside)[0] == ["more of bbb\n"]


def test_logs_follow_stops_quietly_on_ctrl_c(tmp_path, live_process):
    root = tmp_path / "runs" / "g"
    ref = processes.ProcessRef(processes.this_process().host, live_process.pid, processes.start_token(live_process.pid))
    _local_study(root, ref, ["aaa111"], "2026-01-01T00:00:00.000+00:00")
    (root / "aaa111").mkdir()
    (root / "aaa111" / "train.log").write_text("epoch 1 done\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    follow = subprocess.Popen(
        [sys.executable, "-m", "cifar_hpc", "logs", "aaa111", "-f", "--results-dir", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # a background process of a non-interactive shell ignores SIGINT: give it the default back
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert follow.stdout.readline() == "epoch 1 done\n"  # following: the run is still running
    follow.send_signal(signal.SIGINT)
    out, err = follow.communicate(timeout=30)
    assert (follow.returncode, out, err) == (130, "", "")


def _noisy_run(log: str) -> None:
    """What a spawned worker's run may write: prints, logging, warnings, C-level output, then an error."""
    import logging
    import warnings

    from cifar_hpc.study.run_logs import child_output

    with child_output(Path(log), "0a1b2c3d4e5f"):
        print("a print")
        logging.getLogger("cifar_hpc.training.progress").info("epoch 1 of 3")
        warnings.warn("a library warning", UserWarning, stacklevel=1)
        os.write(2, b"written to fd 2\n")
        raise RuntimeError("the run broke")


def test_a_spawned_runs_whole_output_goes_to_its_log(tmp_path):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    log = tmp_path / "r" / "train.log"
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        with pytest.raises(RuntimeError, match="the run broke"):
            pool.submit(_noisy_run, str(log)).result()
    text = log.read_text()
    for expected in (
        "a print",
        "INFO cifar_hpc.training.progress: epoch 1 of 3",
        "a library warning",
        "written to fd 2",
    ):
        assert expected in text
    assert "Traceback" in text and "RuntimeError: the run broke" in text  # a bug keeps its traceback
    assert text.count("UserWarning: a library warning") == 1  # once, with its time


def test_a_local_runs_log_gets_the_consoles_lines_with_their_time_and_the_warnings(tmp_path, capsys, monkeypatch):
    import logging
    import warnings

    from cifar_hpc.base import console
    from cifar_hpc.study.run_logs import capture

    for name in (console.VERBOSE_ENV, "WANDB_QUIET", "WANDB_SHOW_INFO"):
        monkeypatch.delenv(name, raising=False)  # configure() sets them for this process
    console.configure(verbose=False)  # the quiet console a user gets
    with capture(tmp_path / "train.log") as note:
        logging.getLogger("cifar_hpc.training.progress").info("epoch 1/3 loss 2.10")
        logging.getLogger("lightning.pytorch.utilities.rank_zero").info("GPU available: False, used: False")
        logging.getLogger("cifar_hpc.training.train").warning("something to see")
        logging.getLogger("wandb").info("W&B's own chatter")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("a library warning", UserWarning, stacklevel=1)
        note("COMPLETED x baseline/resnet18/seed 0: test 10.0%")
    logging.getLogger("cifar_hpc.training.progress").info("after the run")
    text = (tmp_path / "train.log").read_text()
    for line in ("INFO cifar_hpc.training.progress: epoch 1/3", "WARNING cifar_hpc.training.train: something to see"):
        assert line in text
    assert text.split(" ")[0][:4].isdigit()  # each line starts with its date and time
    assert "UserWarning: a library warning" in text and "INFO cifar_hpc: COMPLETED x" in text
    for absent in ("chatter", "after the run", "GPU available"):  # W&B's and Lightning's chatter: not here either
        assert absent not in text
    shown = capsys.readouterr().err
    assert "epoch 1/3" in shown and "something to see" in shown and "after the run" in shown
    assert "GPU available" not in shown and "COMPLETED" not in shown  # the end line is the executor's to print


def test_following_a_run_that_ended_without_a_log_says_so(tmp_path, capsys):
    root = tmp_path / "runs" / "g"
    ended = subprocess.Popen(["true"])  # a local submit that has ended
    ended.wait()
    gone = processes.ProcessRef(processes.this_process().host, ended.pid, "a-boot-id/123")
    _local_study(root, gone, ["aaa111"], "2026-01-01T00:00:00.000+00:00")
    followed = run_cli(["logs", "aaa111", "-f", "--results-dir", root], capsys)
    assert followed.code == 0 and followed.out.startswith("run aaa111 has no log yet (missing; looked in ")
