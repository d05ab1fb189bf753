"""One way to find a run (``cifar_hpc.study.run_lookup``) and a first study of one's own: ``logs``,
``train --from-run`` and ``collect --plot-gpu`` find a run by id, prefix or ``STUDY/ID``; a variant
(``train --from-run X --lr ...``) lands in X's study, where ``status``, ``logs`` and ``collect`` look;
a run identical to a completed run of another study is said, not retrained silently; a local study
says how far it is; ``grid show`` says which runs are done; ``train --from-run`` of a completed run
says so without importing torch."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_golden, read_json, run_cli, write_grid

from cifar_hpc.base.errors import UserError
from cifar_hpc.config.train_config import TrainConfig
from cifar_hpc.study.grid import expand, parse_grid, render_runs
from cifar_hpc.study.run_lookup import find_run
from cifar_hpc.study.run_state import RunState
from cifar_hpc.study.variants import variant_cell
from cifar_hpc.submit.local_runs import progress_line
from cifar_hpc.training.results import write_json_atomic


def _run(root: Path, run_id: str, log: str = "") -> None:
    write_json_atomic(root / run_id / "config.json", {"run_id": run_id, "model": "resnet18", "seed": 0})
    (root / run_id / "train.log").write_text(log)


def test_one_lookup_names_each_candidate_as_study_slash_id_and_takes_that_form(tmp_path, capsys):
    """The same run id in two studies is two candidates, ``a/ID`` and ``b/ID``, each listed once; the
    refusal is one line saying how to choose; ``STUDY/ID`` (or its prefix) picks one; a full id wins
    over the longer ids it starts."""
    runs = tmp_path / "runs"
    _run(runs / "a", "633da8563c86", "a's\n")
    _run(runs / "a", "633da8563c8")  # a full id that starts the other
    _run(runs / "b", "633da8563c86", "b's\n")
    _run(runs / "b", "7e5a00000000")

    for asked in ("633da8563c86", "633da"):
        with pytest.raises(UserError) as twice:
            find_run(runs, asked)
        message = str(twice.value)
        assert "\n" not in message and "a/633da8563c86, b/633da8563c86" in message, message
        assert "STUDY/ID" in message and message.count("b/633da8563c86") == 1, message  # each candidate once
    with pytest.raises(UserError, match=r"a/633da8563c8, a/633da8563c86, b/633da8563c86; give more of the id"):
        find_run(runs, "633d")
    study, run = find_run(runs, "b/633da")
    assert (study.root, run.run_id) == (runs / "b", "633da8563c86")
    assert find_run(runs, "a/633da8563c8")[1].run_id == "633da8563c8"  # exact beats prefix within a study
    assert find_run(runs, "7e5a")[0].root == runs / "b"
    with pytest.raises(UserError, match=r"^no run '7e5a' in study 'a' of .*runs \(its runs: 633da8563c8, 633da8563c86"):
        find_run(runs, "a/7e5a")
    with pytest.raises(UserError, match=r"^no study 'c' in .*runs \(studies: a, b\)"):
        find_run(runs, "c/633da")
    assert find_run(runs / "a", "a/633da8563c86")[0].root == runs / "a"  # a study folder named by itself

    ambiguous = run_cli(["logs", "633da8563c86", "--results-dir", runs], capsys)
    assert ambiguous.code == 2 and ambiguous.err.count("\n") == 1 and "a/633da8563c86, b/633da8563c86" in ambiguous.err
    assert run_cli(["logs", "b/633da8563c86", "--results-dir", runs], capsys).out == "b's\n"
    picked = run_cli(["train", "--from-run", "b/633da8563c86", "--results-dir", runs, "--print-config"], capsys)
    # found, then its made-up config.json refused
    assert picked.code == 2 and "run_id '633da8563c86' does not match" in picked.err
    assert "is in 2 studies" not in picked.err and "ambiguous" not in picked.err, picked.err
    bad = run_cli(["train", "--from-run", "b/zz", "--results-dir", runs, "--print-config"], capsys)
    assert bad.code == 2 and "a run id is hexadecimal" in bad.err


def test_a_variants_cell_says_what_it_changes_and_a_new_seed_keeps_the_cell():
    x = TrainConfig(cell="baseline")
    assert variant_cell("baseline", x.replace(optim=dataclasses.replace(x.optim, lr=0.01)), x) == "baseline+lr=0.01"
    both = x.replace(epochs=2, augment=dataclasses.replace(x.augment, rotate=True), seed=4)
    assert variant_cell("+swa", both, x) == "+swa+rotate=true+epochs=2"  # by key; the seed never named
    assert variant_cell("baseline", x.replace(seed=1), x) == "baseline"  # another seed of its row


def test_the_progress_line_counts_runs_and_estimates_the_time_left_from_the_runs_so_far():
    assert progress_line(8, [60.0, 60.0, 120.0], failed=1, parallel=1) == "3/8 runs done (1 failed), ~7 min left"
    assert progress_line(8, [60.0, 60.0, 120.0], failed=0, parallel=2) == "3/8 runs done, ~3 min left"
    assert progress_line(4, [20.0], failed=0, parallel=1) == "1/4 runs done, ~1 min left"
    assert progress_line(4, [10.0], failed=0, parallel=1) == "1/4 runs done, ~30 s left"
    assert progress_line(100, [600.0], failed=0, parallel=1) == "1/100 runs done, ~16 h 30 min left"
    assert progress_line(3, [None], failed=1, parallel=1) == "1/3 runs done (1 failed)"  # no wall time known yet


def test_grid_show_marks_each_run_done_failed_running_queued_or_not_run(tmp_path):
    raw = {
        "base": {"epochs": 1},
        "axes": {"model": ["resnet18"], "seed": [0, 1, 2]},
        "cells": [{"name": "baseline"}, {"name": "+rotate", "set": {"augment": {"rotate": True}}}],
    }
    grid = parse_grid(raw, default_name="states")
    runs = expand(grid, results_dir="runs")
    states = dict(
        zip(
            [run.run_id for run in runs],
            [RunState.COMPLETED, RunState.FAILED, RunState.RUNNING, RunState.PENDING, RunState.MISSING],
        )
    )  # the sixth run: not in the study
    text = render_runs(grid, runs, states={run_id: state.plan_word for run_id, state in states.items()})
    assert_golden("grid_show_states.txt", text)
    words = [line.split()[4] for line in text.splitlines()[3:]]
    assert words == ["completed", "failed", "running", "queued", "not", "not"]
    assert "state" not in render_runs(grid, runs).splitlines()[2]  # no study folder: no column


def _submit(grid: Path, runs: Path, capsys, *more: str):
    return run_cli(["submit", "--grid", grid, "--executor", "local", "--results-dir", runs, *more], capsys)


def test_a_first_study_progress_variants_and_identical_runs(tmp_path, capsys):
    """A real local study of two runs (a third cell not run), then a variant of one of its runs."""
    runs = tmp_path / "runs"
    cells = '[[cells]]\nname = "baseline"\n[[cells]]\nname = "+flip"\nset = { augment = { flip = true } }\n'
    grid = write_grid(tmp_path, "g", cells, seeds="[0, 1]")
    done = _submit(grid, runs, capsys, "--cells", "baseline")
    assert done.code == 0, done.err
    progress = [line for line in done.out.splitlines() if "runs done" in line]
    assert len(progress) == 1 and re.fullmatch(r"1/2 runs done, ~\d+ (s|min) left", progress[0]), done.out
    ids = sorted(p.name for p in (runs / "g").iterdir() if (p / "result.json").exists())
    x = ids[0]

    shown = run_cli(["grid", "show", grid, "--results-dir", runs], capsys)
    states = {line.split()[0]: line.split()[4] for line in shown.out.splitlines()[3:]}
    assert sorted(states.values()) == ["completed", "completed", "not", "not"], shown.out

    # a completed run asked for again: said, exit 0, torch never imported
    probe = (
        "import sys\nfrom cifar_hpc.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
        "    print('EXIT:', e.code)\nprint('TORCH:', 'torch' in sys.modules)\n"
    )
    again = subprocess.run(
        [sys.executable, "-c", probe, "train", "--from-run", x[:6], "--results-dir", runs],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "TORCH: False" in again.stdout and "EXIT: 0" in again.stdout, again.stdout + again.stderr
    assert f"run g/{x} is already completed" in again.stdout and "--overwrite" in again.stdout, again.stdout
    assert str(runs / "g" / x / "result.json") in again.stdout

    # a variant: trained into the study, its own row, seen by status, logs and collect
    variant = run_cli(["train", "--from-run", x, "--results-dir", runs, "--lr", "0.01"], capsys)
    assert variant.code == 0, variant.err
    v = json.loads(
        run_cli(["train", "--from-run", x, "--results-dir", runs, "--lr", "0.01", "--print-config"], capsys).out
    )
    assert v["out_dir"] == str(runs / "g" / v["run_id"]) and v["cell"] == "baseline+lr=0.01"
    entry = next(e for e in read_json(runs / "g" / "study.json")["runs"] if e["run_id"] == v["run_id"])
    assert (entry["cell"], entry["compare_to"], entry["seed"]) == ("baseline+lr=0.01", "baseline", 0)
    status = json.loads(run_cli(["status", runs / "g", "--json"], capsys).out)["studies"][0]
    assert (status["total"], status["counts"]["completed"]) == (3, 3), status
    log = run_cli(["logs", v["run_id"][:8], "--results-dir", runs], capsys)
    assert log.code == 0 and "attempt starts" in log.out, log.out
    table = run_cli(["collect", runs / "g", "--format", "md"], capsys)
    assert table.code == 0 and "baseline+lr=0.01" in table.out, table.err

    # identical runs elsewhere: a copy of the grid says so (dry run), a variant says so too
    shutil.copy(grid, tmp_path / "h.toml")
    dry = _submit(tmp_path / "h.toml", runs, capsys, "--cells", "baseline", "--dry-run")
    notes = [line for line in dry.out.splitlines() if "identical" in line]
    assert len(notes) == 1 and f"g/{ids[0]}" in notes[0] and "2 runs" in notes[0], dry.out
    (runs / "other").mkdir()
    shutil.move(runs / "g" / v["run_id"], runs / "other" / v["run_id"])
    said = run_cli(["train", "--from-run", x, "--results-dir", runs, "--lr", "0.01", "--print-config"], capsys)
    assert f"identical to completed run other/{v['run_id']}" in said.err, said.err
