"""Secrets stay out of what Slurm stores. ``sbatch`` copies the submitter's whole environment
(``--export=ALL``, its default; submitit calls it with ours) into the controller's spool,
``StateSaveLocation/hash.<id % 10>/job.<id>/environment``, readable by the cluster's admins and kept
until the job is purged. ``cifar-hpc submit`` withholds the W&B API key from that copy; jobs find it
where W&B looks (``~/.netrc`` from ``wandb login``)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import read_json, run_cli, write_grid

SECRET = "0123456789abcdef0123456789abcdef0badc0de"  # shaped like a W&B key; never a real one


def spool_environment(job_id: str | int) -> bytes:
    """What Slurm stored as the job's environment (NUL-separated NAME=value), read from the spool."""
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    (state,) = [line.split("=", 1)[1].strip() for line in config.splitlines() if line.startswith("StateSaveLocation")]
    path = Path(state) / f"hash.{int(job_id) % 10}" / f"job.{job_id}" / "environment"
    assert os.access(path, os.R_OK), f"{path} is not readable here (the local cluster's tests run as root)"
    return path.read_bytes()


@pytest.mark.slurm
def test_the_api_key_is_not_in_slurms_copy_of_the_environment(slurm_cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    monkeypatch.setenv("CIFAR_HPC_SPOOL_MARKER", "copied")
    grid = write_grid(tmp_path, "secret", '[[cells]]\nname = "baseline"\n')
    profile = tmp_path / "held.toml"  # held: the job never runs, its spool entry stays until scancel
    profile.write_text(
        (Path(__file__).parents[1] / "slurm" / "profiles" / "test-cluster.toml").read_text()
        + "extra_sbatch = { hold = true }\n"
    )
    submitted = run_cli(["submit", "--grid", grid, "--profile", profile], capsys)
    assert submitted.code == 0, submitted.out + submitted.err
    job_id = read_json(tmp_path / "runs" / "secret" / "study.json")["jobs"][0]["job_id"]
    try:
        stored = spool_environment(job_id)
        assert b"CIFAR_HPC_SPOOL_MARKER=copied" in stored  # the right file: the rest of the environment is there
        leaked = SECRET.encode() in stored or b"WANDB_API_KEY=" in stored
        assert not leaked, "the W&B key is in Slurm's spool"  # (no dump of the environment in the report)
        assert os.environ["WANDB_API_KEY"] == SECRET  # withheld only for the sbatch call, then restored
    finally:
        subprocess.run(["scancel", str(job_id)], capture_output=True, timeout=30)


def test_withheld_puts_the_secrets_back_even_when_sbatch_fails(monkeypatch):
    from cifar_hpc.submit.executors import WITHHELD_FROM_SLURM, withheld

    assert "WANDB_API_KEY" in WITHHELD_FROM_SLURM
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    with pytest.raises(RuntimeError), withheld():
        assert "WANDB_API_KEY" not in os.environ
        raise RuntimeError("sbatch: error: Batch job submission failed")
    assert os.environ["WANDB_API_KEY"] == SECRET
    monkeypatch.delenv("WANDB_API_KEY")
    with withheld():  # nothing to withhold: nothing is added afterwards either
        pass
    assert "WANDB_API_KEY" not in os.environ
