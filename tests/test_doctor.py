"""`cifar-hpc doctor`: one line per check, exit 1 when anything would fail on the cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from cifar_hpc.doctor import filesystem_type
from conftest import run_cli, write_grid


def test_filesystem_type_of_root_is_known():
    assert filesystem_type(Path("/")) not in ("", None)
    assert filesystem_type(Path("/proc/self")) == "proc"


@pytest.mark.slurm
def test_doctor_on_the_local_cluster(slurm_cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = write_grid(tmp_path, "doc", '[[cells]]\nname = "baseline"\n[[cells]]\nname = "all"\n'
                      'set = { tricks = { swa = true, early_stop = true } }\n')
    good = run_cli(["doctor", "--grid", grid], capsys)
    assert good.code == 0, good.out
    lines = good.out.splitlines()
    for name in ("grid", "slurm", "srun", "partition", "ddp", "container", "data", "results dir", "wandb", "tricks"):
        assert any(line.split("  ", 1)[1].lstrip().startswith(name) for line in lines), name
    assert any("GENERATED data" in line and line.startswith("WARN") for line in lines)
    assert any("swa+early_stop" in line for line in lines)
    assert not any(line.startswith("FAIL") for line in lines)

    bad = run_cli(["doctor", "--grid", grid, "--profile", _profile(tmp_path, 'partition = "nope"')], capsys)
    assert bad.code == 1 and any(line.startswith("FAIL") and "partition 'nope'" in line for line in bad.out.splitlines())


def test_doctor_without_slurm_checks_the_rest(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = write_grid(tmp_path, "doc", '[[cells]]\nname = "baseline"\n')
    (tmp_path / "data" / "cifar-10-batches-py" / "test_batch").write_bytes(b"broken")
    result = run_cli(["doctor", "--grid", grid, "--executor", "local"], capsys)
    assert result.code == 1 and not any(line[6:].startswith(("slurm", "srun", "partition")) for line in result.out.splitlines())
    assert any(line.startswith("FAIL") and "test_batch" in line for line in result.out.splitlines())


def _profile(folder: Path, text: str) -> Path:
    path = folder / "p.toml"
    path.write_text(text + "\ngpus_per_node = 0\ncpus_per_task = 1\ntime_min = 10\n")
    return path
