"""`cifar-hpc doctor`: one line per check, exit 1 when anything would fail on the cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli, write_grid

from cifar_hpc.submit.doctor import filesystem_type


def test_filesystem_type_of_root_is_known():
    assert filesystem_type(Path("/")) not in ("", None)
    assert filesystem_type(Path("/proc/self")) == "proc"


@pytest.mark.slurm
def test_doctor_on_the_local_cluster(slurm_cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = write_grid(
        tmp_path,
        "doc",
        '[[cells]]\nname = "baseline"\n[[cells]]\nname = "all"\nset = { tricks = { swa = true, early_stop = true } }\n',
    )
    good = run_cli(["doctor", "--grid", grid], capsys)
    assert good.code == 0, good.out
    lines = good.out.splitlines()
    for name in ("grid", "slurm", "srun", "partition", "ddp", "container", "data", "results dir", "wandb", "tricks"):
        assert any(line.split("  ", 1)[1].lstrip().startswith(name) for line in lines), name
    assert any("GENERATED data" in line and line.startswith("WARN") for line in lines)
    assert any("swa+early_stop" in line for line in lines)
    assert not any(line.startswith("FAIL") for line in lines)

    bad = run_cli(["doctor", "--grid", grid, "--profile", _profile(tmp_path, 'partition = "nope"')], capsys)
    assert bad.code == 1 and any(
        line.startswith("FAIL") and "partition 'nope'" in line for line in bad.out.splitlines()
    )


def test_doctor_without_slurm_checks_the_rest(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = write_grid(tmp_path, "doc", '[[cells]]\nname = "baseline"\n')
    (tmp_path / "data" / "cifar-10-batches-py" / "test_batch").write_bytes(b"broken")
    result = run_cli(["doctor", "--grid", grid, "--executor", "local"], capsys)
    assert result.code == 1 and not any(
        line[6:].startswith(("slurm", "srun", "partition")) for line in result.out.splitlines()
    )
    assert any(line.startswith("FAIL") and "test_batch" in line for line in result.out.splitlines())
    # the dry run behind the submission check lists the broken data as a warning: doctor fails it
    assert any(line.startswith("FAIL") and "submission" in line for line in result.out.splitlines()), result.out


def _profile(folder: Path, text: str) -> Path:
    path = folder / "p.toml"
    path.write_text(text + "\ngpus_per_node = 0\ncpus_per_task = 1\ntime_min = 10\n")
    return path


def test_doctor_survives_a_hung_controller(tmp_path, monkeypatch):
    """`scontrol ping` that never answers is a failed check with a reason, not a crash or a hang."""
    from functools import partial

    from cifar_hpc.cluster import slurm
    from cifar_hpc.submit.doctor import check_slurm

    for name, body in (("sbatch", "exit 0"), ("scontrol", "exec sleep 30")):
        fake = tmp_path / name
        fake.write_text(f"#!/bin/sh\n{body}\n")
        fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    check = check_slurm(partial(slurm.call, timeout_s=0.5))
    assert check.status == "fail" and "no answer within" in check.detail


def test_doctor_ddp_check_fails_when_the_layout_would_hang(tmp_path, monkeypatch, capsys):
    """A grid whose devices disagree with the profile fails the ddp check, and extra_sbatch that
    overrides the one-task-per-GPU layout is refused outright (DDP would wait for ranks that never come)."""
    monkeypatch.chdir(tmp_path)
    grid = write_grid(tmp_path, "doc", '[[cells]]\nname = "baseline"\nset = { devices = "2" }\n')
    result = run_cli(["doctor", "--grid", grid, "--profile", _profile(tmp_path, "")], capsys)
    assert result.code == 1 and any(
        line.startswith("FAIL") and "must agree for DDP" in line for line in result.out.splitlines()
    )
    profile = _profile(tmp_path, "extra_sbatch = { ntasks-per-node = 4 }")  # refused where the profile is read
    result = run_cli(["doctor", "--profile", profile], capsys)
    assert result.code == 2 and "ntasks-per-node" in result.err and "one srun task per GPU" in result.err


def test_doctor_warns_of_confounded_comparisons_and_fails_duplicate_cells(tmp_path, monkeypatch, capsys):
    """A removal that re-enables another trick is a WARN naming the comparison; two cells that train
    the same thing after the clash resolutions make the grid itself FAIL."""
    monkeypatch.chdir(tmp_path)
    confounded = write_grid(
        tmp_path,
        "confounded",
        '[[cells]]\nname = "baseline"\n'
        '[[cells]]\nname = "full"\nset = { tricks = { swa = true, clip = true, early_stop = true } }\n'
        '[[cells]]\nname = "full-swa"\ncompare_to = "full"\nset = { tricks = { clip = true, early_stop = true } }\n',
    )
    result = run_cli(["doctor", "--grid", confounded, "--executor", "local"], capsys)
    design = [line for line in result.out.splitlines() if line[6:].startswith("design")]
    assert result.code == 0 and len(design) == 2 and all(line.startswith("WARN") for line in design), result.out
    assert "full vs baseline: no effect: tricks.early_stop=True is undone (swa on switches early_stop off)" in design[0]
    assert "full-swa vs full: confounded: also changes tricks.early_stop (swa on switches early_stop off)" in design[1]

    clean = write_grid(
        tmp_path, "clean", '[[cells]]\nname = "baseline"\n[[cells]]\nname = "+swa"\nset = { tricks = { swa = true } }\n'
    )
    result = run_cli(["doctor", "--grid", clean, "--executor", "local"], capsys)
    assert any(line.startswith("OK") and line[6:].startswith("design") for line in result.out.splitlines()), result.out

    twice = write_grid(
        tmp_path,
        "twice",
        '[[cells]]\nname = "baseline"\n[[cells]]\nname = "a"\nset = { tricks = { swa = true, early_stop = true } }\n'
        '[[cells]]\nname = "b"\nset = { tricks = { swa = true } }\n',
    )
    result = run_cli(["doctor", "--grid", twice, "--executor", "local"], capsys)
    assert result.code == 1 and any(
        line.startswith("FAIL") and "cells 'a' and 'b' train the same thing" in line for line in result.out.splitlines()
    ), result.out


def test_doctor_on_the_shipped_ablation_finds_a_sound_design():
    from cifar_hpc.study.grid import expand, load_grid
    from cifar_hpc.submit.doctor import check_design

    grid = load_grid("ablation")
    assert [(c.status, c.name) for c in check_design(grid, expand(grid))] == [("ok", "design")]
