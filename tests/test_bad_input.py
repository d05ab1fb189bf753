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
