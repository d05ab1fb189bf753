"""A run is exactly what it says it is: its folder holds only it, its id includes the data, and its
cost counts every attempt (Ctrl-C, a kill, a requeue). Real training on generated data, real files."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import read_json, run_cli

from cifar_hpc.base.errors import UserError
from cifar_hpc.config.train_config import TrainConfig
from cifar_hpc.data import cifar_files
from cifar_hpc.data.fingerprint import fingerprint, with_fingerprint

QUICK = ["--epochs", "1", "--batch-size", "12", "--num-workers", "0", "--no-stage", "--wandb-mode", "disabled"]


def train(args, capsys):
    return run_cli(["train", *map(str, args), *QUICK], capsys)


def test_fingerprint_names_the_kind_and_follows_the_content(tmp_path, tiny_data):
    other = cifar_files.write_synthetic(tmp_path / "other", train_per_batch=8, test=20, seed=2).parent
    same = cifar_files.write_synthetic(tmp_path / "same", train_per_batch=8, test=20, seed=1).parent
    assert fingerprint(tiny_data).startswith("generated-")
    assert fingerprint(same) == fingerprint(tiny_data)  # the content counts, not the path
    assert fingerprint(other) != fingerprint(tiny_data)
    cfg = with_fingerprint(_cfg(tiny_data))
    assert cfg.run_id != with_fingerprint(_cfg(other)).run_id  # same settings, other data: another run
    with pytest.raises(UserError, match="is not the data run"):
        with_fingerprint(cfg, other)  # a submitted run finding other data is refused, not trained


def _cfg(data_dir: Path) -> TrainConfig:
    from dataclasses import replace

    base = TrainConfig()
    return base.replace(data=replace(base.data, dir=str(data_dir)))


def test_a_folder_holding_another_run_is_refused_unless_overwritten(tmp_path, tiny_data, capsys):
    out = tmp_path / "t1"
    first = train(["--data-dir", tiny_data, "--out", out], capsys)
    assert first.code == 0, first.err
    before = (out / "result.json").read_text()

    changed = train(["--data-dir", tiny_data, "--out", out, "--seed", "5"], capsys)
    assert changed.code == 2
    assert "holds another run" in changed.err and "differing in seed" in changed.err
    assert "Traceback" not in changed.err and len(changed.err.strip().splitlines()) == 1
    assert (out / "result.json").read_text() == before  # nothing of the old run was touched

    replaced = train(["--data-dir", tiny_data, "--out", out, "--seed", "5", "--overwrite"], capsys)
    assert replaced.code == 0, replaced.err
    assert read_json(out / "result.json")["config"]["seed"] == 5
    assert read_json(out / "config.json")["run_id"] == read_json(out / "result.json")["run_id"]


def test_other_data_is_another_run_not_already_completed(tmp_path, tiny_data, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    other = cifar_files.write_synthetic(tmp_path / "other", train_per_batch=8, test=20, seed=2).parent
    first = train(["--data-dir", tiny_data], capsys)
    second = train(["--data-dir", other], capsys)
    assert first.code == second.code == 0, second.err
    assert "already completed" not in second.err
    results = {read_json(p)["data_fingerprint"]: p.parent for p in (tmp_path / "runs").glob("*/result.json")}
    assert len(results) == 2  # one folder, one W&B id per data set
    # the first data's folder with the other data: refused, not resumed from its checkpoint
    clash = train(["--data-dir", other, "--out", results[fingerprint(tiny_data)]], capsys)
    assert clash.code == 2 and "holds another run" in clash.err and "data.fingerprint" in clash.err


def _start(args: list, cwd: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "cifar_hpc", "train", *map(str, args)]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


LONG = ["--epochs", "6", "--batch-size", "12", "--num-workers", "0", "--no-stage", "--wandb-mode", "offline"]


def _epochs_done(out: Path) -> int:
    try:
        return json.loads((out / "attempts.json").read_text())[-1]["epochs_done"]
    except (OSError, ValueError, IndexError, KeyError):
        return 0


def test_a_stopped_run_resumes_and_its_cost_counts_every_attempt(tmp_path, tiny_data):
    """Ctrl-C: the step finishes, last.ckpt is written, exit 130 with how to resume. Then a SIGKILL (a node that died),
    which says nothing: the next attempt closes it at its last heartbeat. The run that finally
    completes reports wall time, training time and GPU-hours summed over all three attempts."""
    import torch

    out = tmp_path / "run"
    args = ["--data-dir", tiny_data, "--out", out, *LONG]
    first = _start(args, tmp_path)
    _wait_for(out / "progress.json", first)  # an epoch done; no checkpoint yet (written by time)
    first.send_signal(signal.SIGINT)  # saved at the end of the step it lands in
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err[-2000:]
    assert re.search(r"interrupted by Ctrl-C in epoch \d+/6 at step \d+; run the same command again to resume", err)
    assert "Traceback" not in err
    assert not (out / "result.json").exists()  # stopped is not failed
    torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)  # intact

    second = _start(args, tmp_path)
    deadline = time.monotonic() + 300
    while _epochs_done(out) < 1 or len(json.loads((out / "attempts.json").read_text())) < 2:
        assert second.poll() is None and time.monotonic() < deadline, second.communicate()[1][-3000:]
        time.sleep(0.1)
    second.kill()  # SIGKILL: no word from this attempt
    second.communicate(timeout=60)
    assert not (out / "result.json").exists()

    third = _start(args, tmp_path)
    _, err = third.communicate(timeout=600)
    assert third.returncode == 0, err[-3000:]
    result = read_json(out / "result.json")
    attempts = result["attempts"]
    assert [a["reason"].split(" ")[0] for a in attempts] == ["interrupted", "lost:", "completed"]
    assert all(a["wall_s"] > 0.5 for a in attempts) and attempts[1]["epochs_done"] >= 1
    assert result["wall_s"] == pytest.approx(sum(a["wall_s"] for a in attempts), abs=0.01)
    assert result["wall_s"] > attempts[-1]["wall_s"] + 1.0
    assert result["train_s"] == pytest.approx(sum(a["train_s"] for a in attempts), abs=0.01)
    assert result["epochs_run"] == 6
    print("attempts:", json.dumps([(a["reason"][:24], a["wall_s"]) for a in attempts]), "wall_s:", result["wall_s"])
