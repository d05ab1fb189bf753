"""The same lines wherever a run trains: a local submit's console and each run's ``train.log`` get one
line per epoch (time-stamped in the log) whatever ``--parallel`` and the terminal, Ctrl-C leaves one
line and no traceback, and nothing that is not a terminal gets escape codes.

Real processes (``cifar-hpc submit --executor local``) on generated data, W&B not silenced (as a user
has it): the accuracies say nothing about CIFAR-10.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import run_console_script, write_grid

from cifar_hpc.base import console

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) \S+: ")
BASELINE = '[[cells]]\nname = "baseline"\n'


def _user_env() -> dict[str, str]:
    """This test's environment (W&B offline, its folders in tmp) without the suite's WANDB_SILENT, nor
    the W&B quiet settings an earlier in-process test's ``console.configure(False)`` left (``-v``
    leaves a user's own W&B settings alone: with them its lines would not show)."""
    left_out = {"WANDB_SILENT", console.VERBOSE_ENV, *console.WANDB_QUIET_ENV}
    return {name: value for name, value in os.environ.items() if name not in left_out}


def _epochs(text: str, run_id: str, prefix: str = "") -> list[str]:
    line = rf"^{re.escape(prefix)}.*INFO cifar_hpc\.training\.progress: epoch (\d+)/\d+ run {run_id}: train_loss "
    return re.findall(line, text, re.M)


def _log_lines(log: Path) -> list[str]:
    lines = log.read_text().splitlines()
    assert lines and all(STAMP.match(line) for line in lines), lines  # every line with its time
    return lines


@pytest.mark.slow
@pytest.mark.parametrize("verbose", [False, True])
def test_parallel_runs_print_each_epoch_on_the_console_and_their_logs_are_whole(tmp_path, verbose):
    """Before: with --parallel no epoch line reached the console, and train.log had neither times nor
    the end line; with -v W&B's start-up lines went into train.log raw (no time) and not to the console."""
    grid = write_grid(tmp_path, "par", BASELINE, epochs=2, seeds="[0, 1]")
    proc = run_console_script(
        ["-v"] * verbose
        + ["submit", "--grid", grid, "--executor", "local", "--parallel", "2", "--results-dir", tmp_path / "runs"],
        cwd=tmp_path,
        env=_user_env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ended = [line for line in proc.stdout.splitlines() if line.startswith("COMPLETED ")]
    assert len(ended) == 2, proc.stdout
    for end in ended:
        run_id = end.split()[1]
        # the console: each epoch once, after its run's id (two runs' lines told apart)
        assert _epochs(proc.stderr, run_id, prefix=f"[{run_id}] ") == ["1", "2"], proc.stderr
        lines = _log_lines(tmp_path / "runs" / "par" / run_id / "train.log")
        assert f"--- {run_id}: an attempt starts (local submit --parallel" in lines[0]
        assert _epochs("\n".join(lines), run_id) == ["1", "2"]
        assert lines[-1].endswith(f"INFO cifar_hpc: {end}")  # the end line, as the console shows it
        assert "\x1b" not in "".join(lines)
        # W&B's start-up: on the console with -v, after the run's id, as an in-process run shows it
        wandb_lines = re.findall(rf"^\[{run_id}\] INFO wandb: .*$", proc.stderr, re.M)
        assert bool(wandb_lines) == verbose, proc.stderr[-3000:]
    assert "\x1b" not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr


def _read_all(fd: int, into: bytearray) -> None:
    """Drain a pseudo terminal (a full one blocks the process writing to it) until it closes."""
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the other end is closed
            return
        if not data:
            return
        into.extend(data)


@pytest.mark.slow
def test_on_a_terminal_the_log_gets_the_epoch_lines_and_ctrl_c_leaves_one_line(tmp_path):
    """A user's terminal on stdin and stderr, stdout redirected to a file (``> out.txt``), then Ctrl-C
    once the first epoch is in the log. Before: the log got no epoch line (the terminal's progress bar
    stood for them), Lightning drew its bar's \\r and escape codes into the file, and Ctrl-C left a
    traceback in train.log."""
    grid = write_grid(tmp_path, "tty", BASELINE, epochs=30)  # far more epochs than Ctrl-C lets it train
    terminal, user_end = os.openpty()
    out_path = tmp_path / "stdout.txt"
    # a process started by a non-interactive shell may ignore SIGINT: a terminal's command would not
    start = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.executable, sys.argv[1:])"
    )
    command = [sys.executable, "-c", start, sys.executable, "-m", "cifar_hpc"]
    args = ["submit", "--grid", grid, "--executor", "local", "--results-dir", tmp_path / "runs"]
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [*command, *map(str, args)],
            stdin=user_end,
            stdout=out,
            stderr=user_end,
            cwd=tmp_path,
            env=_user_env(),
            start_new_session=True,  # its own process group: the one a terminal's Ctrl-C signals
        )
    os.close(user_end)
    shown = bytearray()
    reader = threading.Thread(target=_read_all, args=(terminal, shown), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240
        logs: list[Path] = []
        while not (logs and _epochs(logs[0].read_text(), r"[0-9a-f]{12}")):
            assert proc.poll() is None, bytes(shown).decode(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "no epoch line in train.log"
            time.sleep(0.1)
            logs = list((tmp_path / "runs" / "tty").glob("*/train.log"))
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(timeout=10)
        os.close(terminal)
    run_id = logs[0].parent.name
    lines = _log_lines(logs[0])
    said = [line for line in lines if "interrupted" in line]
    assert len(said) == 1 and said[0] == lines[-1], lines
    assert f"resume {run_id} from " in said[0] and "Traceback" not in "\n".join(lines)
    assert "1" in _epochs("\n".join(lines), run_id)

    screen = bytes(shown).decode(errors="replace").replace("\r\n", "\n")
    interrupted = [line for line in screen.splitlines() if "interrupted" in line]
    assert interrupted == [f"cifar-hpc: {said[0].split('cifar_hpc: ', 1)[1]}"], screen  # one line, the log's
    assert "Traceback" not in screen and "1" in _epochs(screen, run_id)  # no bar on stdout: the lines show
    stdout = out_path.read_text()
    assert "\x1b" not in stdout and "\r" not in stdout, stdout[:500]


def test_beside_a_progress_bar_the_epoch_line_goes_to_the_log_only(tmp_path, capsys, monkeypatch):
    """On a terminal Lightning's bar shows the epochs: the console holds the epoch line back, the
    run's log keeps it."""
    from cifar_hpc.study.run_logs import capture
    from cifar_hpc.training.progress import log_progress

    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    console.configure(False)
    record = {"run_id": "1a2b3c4d5e6f", "epoch": 1, "epochs": 2, "train_loss": 2.0, "train_acc": 0.1}
    record |= {"val_acc": 0.1, "lr": 0.1, "img_per_s": 10.0, "elapsed_s": 3.0}
    with capture(tmp_path / "train.log"):
        log_progress(record, bar=True)
        log_progress({**record, "epoch": 2}, bar=False)
    text = (tmp_path / "train.log").read_text()
    assert _epochs(text, "1a2b3c4d5e6f") == ["1", "2"]
    assert _epochs(capsys.readouterr().err, "1a2b3c4d5e6f") == ["2"]


def _start_parallel_study(tmp_path: Path, name: str) -> tuple[subprocess.Popen, list[Path]]:
    """``submit --executor local --parallel 2`` of two long runs in its own session (as a terminal's
    command is), returned once both runs have an epoch in their logs."""
    grid = write_grid(tmp_path, name, BASELINE, epochs=300, seeds="[0, 1]")  # far more than the test waits
    start = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.executable, sys.argv[1:])"
    )
    args = ["submit", "--grid", grid, "--executor", "local", "--parallel", "2", "--results-dir", tmp_path / "runs"]
    proc = subprocess.Popen(
        [sys.executable, "-c", start, sys.executable, "-m", "cifar_hpc", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env=_user_env(),
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    logs: list[Path] = []
    while not (len(logs) == 2 and all(_epochs(log.read_text(), r"[0-9a-f]{12}") for log in logs)):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no epoch line in both train.logs"
        time.sleep(0.1)
        logs = list((tmp_path / "runs" / name).glob("*/train.log"))
    return proc, logs


@pytest.mark.slow
@pytest.mark.parametrize(
    ("how", "code", "said"),
    [
        ("terminal Ctrl-C", 130, "interrupted by Ctrl-C"),  # the terminal signals the whole process group
        ("kill -INT", 130, "interrupted by Ctrl-C"),  # to the command alone (a script, `timeout -s INT`)
        ("kill", 143, "stopped by SIGTERM"),  # `kill PID`, `timeout 2h cifar-hpc submit ...`
    ],
)
def test_parallel_workers_stop_with_their_parent_and_save_their_step(tmp_path, how, code, said):
    """Before: a Ctrl-C sent to the command alone (not its process group) left the workers training,
    the command waiting for all 300 epochs; a SIGTERM killed the command and left its workers training
    on as orphans (the study then read as stopped, and a second submit would train the same runs)."""
    proc, logs = _start_parallel_study(tmp_path, "stop")
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) >= 2, children  # the two workers (and multiprocessing's resource tracker)
    try:
        if how == "terminal Ctrl-C":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGINT if how == "kill -INT" else signal.SIGTERM)
        _, stderr = proc.communicate(timeout=90)
        assert proc.returncode == code, stderr.decode()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stderr = stderr.decode()
    ended = [line for line in stderr.splitlines() if line.startswith("cifar-hpc: ")]
    assert len(ended) == 1 and said in ended[0] and "2 runs not done" in ended[0], stderr[-3000:]
    assert "Traceback" not in stderr
    for log in logs:  # each run saved where it stopped and says how it resumes
        lines = _log_lines(log)
        assert f"resume {log.parent.name} from " in lines[-1], lines[-5:]
        assert (log.parent / "checkpoints" / "last.ckpt").exists() or list(log.parent.rglob("last*.ckpt"))
    deadline = time.monotonic() + 10  # the resource tracker leaves a moment after its parent
    while (alive := [pid for pid in children if Path(f"/proc/{pid}").exists()]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive, f"the command's processes still running after it ended: {alive}"
