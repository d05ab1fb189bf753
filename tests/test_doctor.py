"""`cifar-hpc doctor`: one line per check, exit 1 when anything would fail on the cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli, write_grid

from cifar_hpc.cluster import image_check
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


# --- the container preflight (cifar_hpc.cluster.image_check; the real apptainer: tests/test_apptainer.py) ---


def test_the_image_probe_says_what_this_side_has():
    """The probe that runs inside an image, run by this Python: the facts compared are this side's."""
    done = subprocess.run([sys.executable, "-c", image_check.PROBE], capture_output=True, text=True, timeout=60)
    (line,) = [line for line in done.stdout.splitlines() if line.startswith(image_check.MARKER)]
    facts = json.loads(line[len(image_check.MARKER) :])
    assert {k: facts[k] for k in ("python", "cifar_hpc", "code")} == image_check.here() and facts["submitit"]


HERE = {"python": "3.11.7", "cifar_hpc": "0.1.0", "code": "aaaaaaaaaaaa"}


@pytest.mark.parametrize(
    ("inside", "status", "says"),
    [
        ({**HERE, "python": "3.11.2", "submitit": "1.5.4"}, "ok", "Python 3.11.2, cifar-hpc 0.1.0 (source aaaa"),
        ({**HERE, "code": "bbbbbbbbbbbb", "submitit": "1.5.4"}, "warn", "runs train the image's code"),
        ({**HERE, "python": "3.10.12", "submitit": "1.5.4"}, "fail", "has Python 3.10.12, this side 3.11.7"),
        ({**HERE, "cifar_hpc": "0.0.9", "submitit": "1.5.4"}, "fail", "has cifar-hpc 0.0.9, this side 0.1.0"),
        (HERE, "fail", "has no submitit"),
        ({"python": "3.11.2", "error": "import cifar_hpc: ModuleNotFoundError"}, "fail", "but no cifar-hpc"),
        ({"error": "exit 255: FATAL: could not open image"}, "fail", "could not run python3 in img.sif"),
    ],
)
def test_an_image_that_differs_from_this_side_is_one_line(inside, status, says):
    (finding,) = image_check.compare(inside, HERE, "img.sif")
    assert finding.status == status and says in finding.detail and "\n" not in finding.detail


def test_doctor_fails_when_the_setup_lines_give_no_apptainer(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    image = tmp_path / "cifar-hpc.sif"
    image.write_bytes(b"")
    profile = _profile(tmp_path, f'runtime = "apptainer"\nimage = "{image}"\nsetup = ["export PATH=/usr/bin:/bin"]')
    result = run_cli(["doctor", "--profile", profile, "--executor", "local"], capsys)
    (line,) = [line for line in result.out.splitlines() if line[6:].startswith("container")]
    assert result.code == 1 and line.startswith("FAIL")
    assert "apptainer not found on this node's PATH after the profile's setup lines" in line
