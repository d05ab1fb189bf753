"""`cifar-hpc doctor`: one line per check, exit 1 when anything would fail on the cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli, write_grid

from cifar_hpc.doctor import filesystem_type


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


def _profile(folder: Path, text: str) -> Path:
    path = folder / "p.toml"
    path.write_text(text + "\ngpus_per_node = 0\ncpus_per_task = 1\ntime_min = 10\n")
    return path


def test_doctor_survives_a_hung_controller(tmp_path, monkeypatch):
    """`scontrol ping` that never answers is a failed check with a reason, not a crash or a hang."""
    from functools import partial

    from cifar_hpc import slurm
    from cifar_hpc.doctor import check_slurm

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
