"""A user's mistake: one clear line on stderr, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import re

import pytest
from conftest import run_cli, run_console_script, write_grid


def _corrupt_data(root):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        (folder / name).write_bytes(b"not a pickle")
    return root


CASES = {
    "unknown model": (["--model", "resnet50"], "unknown model 'resnet50'; valid: resnet18, resnet34"),
    "unknown optimizer": (["--optimizer", "lbfgs"], "unknown optimizer 'lbfgs'"),
    "unknown schedule": (["--schedule", "step"], "unknown schedule 'step'"),
    "unknown precision": (["--precision", "fp8"], "unknown precision 'fp8'"),
    "zero epochs": (["--epochs", "0"], "epochs must be > 0"),
    "negative batch": (["--batch-size", "-4"], "batch size must be > 0"),
    "zero lr": (["--lr", "0"], "learning rate must be > 0"),
    "batch vs world size": (
        ["--accelerator", "cpu", "--devices", "2", "--batch-size", "3"],
        "not divisible by the world size 2",
    ),
    "bad accumulation": (["--accumulate", "0:0"], "factor >= 1"),
    "accumulation not from epoch 0": (["--accumulate", "2:2"], "must start at epoch 0"),
    "batch larger than the data": (["--batch-size", "4096"], "larger than the 36 training images"),
    "gpu asked on a CPU machine": (["--accelerator", "gpu"], "torch sees no CUDA GPU"),
    # the forms `train --help` suggests for --devices: a count runs on CPU (DDP processes), indices cannot
    "GPU indices on CPU": (["--accelerator", "cpu", "--devices", "0,1"], "lists GPU indices, but this run is on CPU"),
    "GPU indices, auto finds no GPU": (["--devices", "[0, 1]"], "lists GPU indices, but this run is on CPU"),
    "unknown accelerator": (["--accelerator", "tpu"], "unknown accelerator 'tpu'; valid: auto, cpu, gpu, cuda"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_option_values(case, tiny_data, tmp_path, capsys):
    args, message = CASES[case]
    out = tmp_path / "out"
    result = run_cli(["train", "--data-dir", tiny_data, "--out", out, "--no-stage", *args], capsys)
    assert result.code == 2, result
    assert message in result.err
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    assert not out.exists()


def test_missing_data_dir(tmp_path, capsys):
    result = run_cli(["train", "--data-dir", tmp_path / "nowhere", "--out", tmp_path / "out"], capsys)
    assert result.code == 2 and "cifar-hpc data" in result.err and not (tmp_path / "out").exists()


def test_corrupt_data_dir(tmp_path, capsys):
    result = run_cli(["train", "--data-dir", _corrupt_data(tmp_path / "bad"), "--out", tmp_path / "out"], capsys)
    assert result.code == 2 and "data_batch_1" in result.err and not (tmp_path / "out").exists()
    assert len(result.err.strip().splitlines()) == 1


def test_unwritable_output_dir(tiny_data, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_cli(["train", "--data-dir", tiny_data, "--out", blocker / "run"], capsys)
    assert result.code == 2 and "is not a folder" in result.err


def test_bad_config_file(tiny_data, tmp_path, capsys):
    bad = tmp_path / "c.toml"
    bad.write_text("model = 'resnet18'\n[tricks]\nswa = 'yes'\n")
    result = run_cli(["train", "--config", bad, "--data-dir", tiny_data], capsys)
    assert result.code == 2 and "tricks.swa has the wrong type" in result.err
    bad.write_text("[optim]\nnesterov = true\n")
    result = run_cli(["train", "--config", bad, "--data-dir", tiny_data], capsys)
    assert result.code == 2 and "unknown setting optim.nesterov; valid: " in result.err
    bad.write_text("model = \n")
    result = run_cli(["train", "--config", bad], capsys)
    assert result.code == 2 and "is not valid TOML" in result.err


def test_console_script_exit_code_and_no_traceback(tmp_path):
    proc = run_console_script(["train", "--model", "vgg", "--out", tmp_path / "out"])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "cifar-hpc: error: unknown model 'vgg'; valid: resnet18, resnet34"
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()
    usage = run_console_script(["train", "--epochs", "many"])
    assert usage.returncode == 2 and "Invalid value" in usage.stderr


def test_config_json_round_trips_and_an_edited_one_is_refused(tmp_path, capsys):
    """A run's config.json ({"run_id": ..., **settings}, as train writes it) is a valid --config."""
    printed = run_cli(
        ["train", "--model", "resnet34", "--accumulate", "0:1,2:2", "--set", "wandb.tags=['a', 'b']", "--print-config"],
        capsys,
    )
    assert printed.code == 0, printed.err
    config = tmp_path / "config.json"
    config.write_text(printed.out)
    again = run_cli(["train", "--config", config, "--print-config"], capsys)
    assert again.code == 0 and again.out == printed.out
    changed = run_cli(["train", "--config", config, "--seed", "3", "--print-config"], capsys)
    assert changed.code == 0 and '"seed": 3' in changed.out  # flags over a config.json make another run
    config.write_text(printed.out.replace('"resnet34"', '"resnet18"'))
    edited = run_cli(["train", "--config", config, "--print-config"], capsys)
    assert edited.code == 2 and "does not match these settings" in edited.err
    assert len(edited.err.strip().splitlines()) == 1


SET_CASES = {
    "unknown key": (["--set", "optim.nesterov=true"], "unknown setting optim.nesterov; valid: "),
    "wrong type": (["--set", "tricks.swa=yes"], "setting tricks.swa has the wrong type: 'yes'"),
    "no value": (["--set", "optim.lr"], "--set needs key=value"),
    "a section given a value": (["--set", "optim=1"], "optim must be a table of settings"),
    "bad choice": (["--set", "data.loader=dali"], "unknown loader 'dali'"),
}


@pytest.mark.parametrize("case", sorted(SET_CASES))
def test_bad_set_values(case, tmp_path, capsys):
    args, message = SET_CASES[case]
    result = run_cli(["train", "--out", tmp_path / "out", *args], capsys)
    assert result.code == 2, result
    assert message in result.err and len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_mistyped_option_suggests_the_right_one(tmp_path, capsys):
    result = run_cli(["submit", "--gird", "x", "--results-dir", tmp_path / "runs"], capsys)
    assert result.code == 2 and "Traceback" not in result.err
    assert "No such option: --gird" in result.err
    assert re.search(r"(Did you mean|Possible options:) --grid\b", result.err), result.err
    assert not (tmp_path / "runs").exists()


SEEDS_REFUSED = {
    "negative": ["--seed", "-1"],
    "past 2**32 - 1": ["--seed", str(2**32)],
    "by --set": ["--set", "seed=-5"],
}


@pytest.mark.parametrize("case", sorted(SEEDS_REFUSED))
def test_a_seed_outside_0_to_2_32_is_refused(case, tiny_data, tmp_path, capsys):
    """Lightning's seed_everything turns such a seed into 0 (two "seeds", one run); numpy then raises."""
    out = tmp_path / "out"
    result = run_cli(["train", "--data-dir", tiny_data, "--out", out, "--no-stage", *SEEDS_REFUSED[case]], capsys)
    assert result.code == 2, result
    assert "seed must be in 0..4294967295" in result.err and "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1 and not out.exists()


def test_a_grid_with_a_seed_outside_0_to_2_32_is_refused(tmp_path, capsys):
    grid = write_grid(tmp_path, "negative", "", seeds="[0, -1]")
    runs = tmp_path / "runs"
    for args in (["submit", "--grid", grid, "--executor", "local", "--dry-run"], ["grid", "show", grid]):
        result = run_cli([*args, "--results-dir", runs], capsys)
        assert result.code == 2, result
        assert "seed must be in 0..4294967295, got -1" in result.err, result.err
        assert len(result.err.strip().splitlines()) == 1 and not runs.exists()


def test_an_output_dir_that_cannot_be_created_is_refused_before_training(tiny_data, tmp_path, capsys):
    """/proc passes a permission check (as root) but takes no new folder: found out before anything is written."""
    result = run_cli(
        ["train", "--data-dir", tiny_data, "--out", "/proc/nope/run", "--no-stage", "--epochs", "1"], capsys
    )
    assert result.code == 2, result
    assert "output dir /proc/nope/run is not writable (/proc refuses new entries" in result.err
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err


# --- submit's flags mean the same on both executors ----------------------------------------------

BOTH_REFUSE = {
    "pack not a number": (["--pack", "many"], "--pack must be a whole number >= 1 or 'auto', got 'many'"),
    "pack zero": (["--pack", "0"], "--pack must be a whole number >= 1 or 'auto', got '0'"),
    "per-gpu zero": (["--per-gpu", "0"], "--per-gpu must be >= 1, got 0"),
    "parallel zero": (["--parallel", "0"], "--parallel must be >= 1, got 0"),
}
"""Values no executor can honour: the same line whichever executor is asked."""

ONE_REFUSES = {
    # flag: (the executor that cannot honour it, its arguments, what the line says)
    "pack": ("local", ["--pack", "2"], "--pack 2 does not apply to the local executor: it sizes Slurm array tasks"),
    "pack auto": ("local", ["--pack", "auto"], "--pack auto does not apply to the local executor"),
    "per-gpu": ("local", ["--per-gpu", "3"], "--per-gpu 3 does not apply to the local executor: it shares"),
    "gpus-per-node": ("local", ["--gpus-per-node", "4"], "--gpus-per-node 4 does not apply to the local executor"),
    "nodes": ("local", ["--nodes", "2"], "--nodes 2 does not apply to the local executor"),
    "time-min": ("local", ["--time-min", "5"], "--time-min 5 does not apply to the local executor: it is a Slurm"),
    "partition": ("local", ["--partition", "gpu"], "--partition 'gpu' does not apply to the local executor"),
    "account": ("local", ["--account", "proj"], "--account 'proj' does not apply to the local executor"),
    "array-parallelism": ("local", ["--array-parallelism", "3"], "--array-parallelism 3 does not apply to the local"),
    "max-array-size": ("local", ["--max-array-size", "3"], "--max-array-size 3 does not apply to the local executor"),
    "parallel": ("slurm", ["--parallel", "2"], "--parallel 2 does not apply to the Slurm executor: it trains"),
}
"""Flags only one executor has a meaning for: the other refuses them, saying why, instead of
ignoring them (or, for --time-min on the local executor, explaining Slurm's signal jitter)."""


def _refused(result, message, written):
    assert result.code == 2, result
    assert message in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    assert not written.exists()


@pytest.mark.parametrize("executor", ["local", "slurm"])
@pytest.mark.parametrize("case", sorted(BOTH_REFUSE))
def test_flags_no_executor_can_honour_are_refused_by_both(case, executor, tmp_path, capsys):
    grid = write_grid(tmp_path, "flags", "")
    args, message = BOTH_REFUSE[case]
    runs = tmp_path / "runs"
    for dry in (["--dry-run"], []):  # the dry run first: a real one would train or submit
        result = run_cli(["submit", "--grid", grid, "--executor", executor, "--results-dir", runs, *args, *dry], capsys)
        _refused(result, message, runs)


@pytest.mark.parametrize("case", sorted(ONE_REFUSES))
def test_a_flag_one_executor_cannot_honour_is_refused_with_the_reason(case, tmp_path, capsys):
    grid = write_grid(tmp_path, "flags", "")
    executor, args, message = ONE_REFUSES[case]
    runs = tmp_path / "runs"
    for dry in (["--dry-run"], []):  # the dry run first: a real one would train or submit
        result = run_cli(["submit", "--grid", grid, "--executor", executor, "--results-dir", runs, *args, *dry], capsys)
        _refused(result, message, runs)


def test_the_auto_executor_says_what_it_chose_when_it_refuses_a_flag(tmp_path, capsys, monkeypatch):
    grid = write_grid(tmp_path, "flags", "")
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm"))
    result = run_cli(["submit", "--grid", grid, "--results-dir", tmp_path / "runs", "--time-min", "5"], capsys)
    _refused(result, "--time-min 5 does not apply to the local executor (chosen: no sbatch on PATH)", tmp_path / "runs")


# --- the default profile is the local Slurm test cluster, and says so ----------------------------


def test_the_default_profile_is_named_for_the_test_cluster_and_local_still_loads(tmp_path, capsys, monkeypatch):
    from cifar_hpc.cluster.profiles import DEFAULT_PROFILE, load_profile

    assert DEFAULT_PROFILE == "test-cluster" and load_profile().name == "test-cluster"
    grid = write_grid(tmp_path, "tiny", "")
    result = run_cli(["submit", "--grid", grid, "--executor", "slurm", "--time-min", "1", "--dry-run"], capsys)
    assert result.code == 2 and "profile test-cluster: time_min 1 is too short" in result.err
    notes = []
    assert load_profile("local", note=notes.append) == load_profile("test-cluster")
    (note,) = notes
    assert "profile 'local' is now called 'test-cluster'" in note
    old = run_cli(["submit", "--grid", grid, "--profile", "local", "--executor", "local", "--dry-run"], capsys)
    assert old.code == 0 and old.err.count("\n") == 1 and note in old.err


def test_doctor_without_slurm_checks_the_executor_submit_would_use(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid = write_grid(tmp_path, "doc", '[[cells]]\nname = "baseline"\n')
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm"))
    result = run_cli(["doctor", "--grid", grid], capsys)
    assert result.code == 0, result.out
    assert "sbatch not found" not in result.out
    (line,) = [line for line in result.out.splitlines() if line[6:].startswith("executor")]
    assert line.startswith("OK") and "local, as submit chooses here: no sbatch on PATH" in line
    assert any(line[6:].startswith("submission") and line.startswith("OK") for line in result.out.splitlines())


# --- a grid file's mistakes read as well as the command line's -----------------------------------


def _grid_file(tmp_path, text):
    path = tmp_path / "mine.toml"
    path.write_text(text)
    return path


GRID_CASES = {
    "a typo in [base]": (
        '[base]\nepoch = 2\n[[cells]]\nname = "baseline"\n[[cells]]\nname = "sgd"\n',
        "mine.toml: [base]: unknown setting epoch (did you mean epochs?); valid: ",
    ),
    "a typo in a section of [base]": (
        '[base]\noptim = { nme = "adam" }\n',
        "mine.toml: [base]: unknown setting optim.nme (did you mean optim.name?); valid: ",
    ),
    "a typo in a cell's set": (
        '[[cells]]\nname = "baseline"\n[[cells]]\nname = "adam"\nset = { optim = { nam = "adam" } }\n',
        "mine.toml: cell adam's set: unknown setting optim.nam (did you mean optim.name?); valid: ",
    ),
    "a seed listed twice": ("[axes]\nseed = [0, 1, 0]\n", "mine.toml: axis seed lists 0 twice"),
    "an epochs value listed twice": ("[axes]\nepochs = [1, 1]\n", "mine.toml: axis epochs lists 1 twice"),
}


@pytest.mark.parametrize("case", sorted(GRID_CASES))
def test_a_grid_file_mistake_is_blamed_where_it_is_written(case, tmp_path, capsys):
    text, message = GRID_CASES[case]
    runs = tmp_path / "runs"
    for args in (["grid", "show"], ["submit", "--executor", "local", "--dry-run", "--results-dir", runs, "--grid"]):
        result = run_cli([*args, _grid_file(tmp_path, text)], capsys)
        _refused(result, message, runs)


def test_a_quoted_dotted_key_in_a_cell_is_taken_as_set_takes_it(tmp_path, capsys):
    quoted = _grid_file(
        tmp_path, '[[cells]]\nname = "baseline"\n[[cells]]\nname = "adam"\nset = { "optim.name" = "adam" }\n'
    )
    shown = run_cli(["grid", "show", quoted], capsys)
    assert shown.code == 0, shown.err
    nested = _grid_file(tmp_path, '[[cells]]\nname = "baseline"\n[[cells]]\nname = "adam"\nset.optim.name = "adam"\n')
    assert run_cli(["grid", "show", nested], capsys).out == shown.out and "optim.name=adam" in shown.out
    on_the_line = run_cli(["grid", "show", "smoke", "--set", "optim.name=adam"], capsys)
    assert on_the_line.code == 0 and "optim.name=adam" in on_the_line.out
    based = _grid_file(tmp_path, '[base]\n"optim.name" = "adam"\n"tricks.swa" = true\n')
    assert run_cli(["grid", "show", based], capsys).code == 0


def test_sync_without_a_wandb_key_says_so_before_pushing_anything(tmp_path, capsys, monkeypatch):
    run = tmp_path / "study" / "r1" / "wandb" / "offline-run-20261124_070000-r1"
    run.mkdir(parents=True)
    (run / "run-r1.wandb").write_bytes(b":W&B\xe1\xbe\x00")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "wandb").write_text(f'#!/bin/sh\n: > "{tmp_path}/pushed"\n')
    (bin_dir / "wandb").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    result = run_cli(["sync", tmp_path / "study"], capsys)
    assert result.code == 2 and "pushing" not in result.out and not (tmp_path / "pushed").exists()
    assert "no W&B API key" in result.err and "wandb login" in result.err
    assert len(result.err.strip().splitlines()) == 1
    dry = run_cli(["sync", tmp_path / "study", "--dry-run"], capsys)  # listing what would go needs no key
    assert dry.code == 0 and "would push" in dry.out


def test_counts_read_as_english(tmp_path, capsys):
    from cifar_hpc.base.words import counted

    assert [counted(n, "run") for n in (0, 1, 2)] == ["0 runs", "1 run", "2 runs"]
    assert counted(1, "batch", "batches") == "1 batch" and counted(3, "batch", "batches") == "3 batches"
    one = write_grid(tmp_path, "one", "")
    shown = run_cli(["grid", "show", one], capsys)
    assert shown.out.startswith("grid one: 1 run = 1 cell x 1 model x 1 seed\n"), shown.out
    two = write_grid(tmp_path, "two", "", seeds="[0, 1]")
    assert run_cli(["grid", "show", two], capsys).out.startswith("grid two: 2 runs = 1 cell x 1 model x 2 seeds\n")
    dry = run_cli(
        ["submit", "--grid", one, "--executor", "local", "--dry-run", "--results-dir", tmp_path / "r"], capsys
    )
    assert "grid one: 1 run — " in dry.out and "plan: 1 run on this machine" in dry.out, dry.out
    assert " 1 runs" not in dry.out
