"""slurm/train.sbatch: its #SBATCH contract, and real jobs on the local Slurm cluster.

The local cluster's nodes have one simulated GPU each, so the script's GPU defaults schedule unchanged;
the only override is ``--cpus-per-task=1`` (the nodes have 1 CPU, the script asks for 8).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import read_json

SBATCH = Path(__file__).resolve().parents[1] / "slurm" / "train.sbatch"
LOCAL_OVERRIDES = ["--cpus-per-task=1"]  # what the local cluster needs on top of the script's defaults


def sbatch_options(text: str) -> dict[str, str]:
    """``#SBATCH --name=value`` lines as {name: value} (flags like --requeue map to "")."""
    options = {}
    for match in re.finditer(r"^#SBATCH\s+--([\w-]+)(?:=(\S+))?", text, flags=re.MULTILINE):
        options[match.group(1)] = match.group(2) or ""
    return options


def test_sbatch_defaults_one_gpu_node_requeue_on_usr2():
    options = sbatch_options(SBATCH.read_text())
    assert options["signal"].split("@")[0] in ("USR2", "SIGUSR2")  # the project's one requeue signal
    assert "requeue" in options
    # DDP under srun forms one process group only with one task per GPU
    assert options["ntasks-per-node"] == options["gpus-per-node"]
    assert "%a" not in options["output"]  # Slurm 22.05 writes 4294967294 for %a outside arrays
    assert not re.search(r"^\s*set\s+-\w*x", SBATCH.read_text(), flags=re.MULTILINE)  # no env echoed to the log


def submit(tmp_path: Path, train_args: list[str]) -> str:
    """``sbatch --parsable`` from tmp_path (the job's working dir); the job finds this Python's cifar-hpc."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run(
        ["sbatch", "--parsable", *LOCAL_OVERRIDES, str(SBATCH), *map(str, train_args)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


def tiny_train_args(data_dir: Path, out: Path) -> list:
    return [
        "--data-dir",
        data_dir,
        "--out",
        out,
        "--epochs",
        1,
        "--batch-size",
        12,
        "--num-workers",
        0,
        "--no-stage",
        "--wandb-mode",
        "offline",
    ]


def job_exit_code(job_id: str) -> str:
    return subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", job_id, "--format=ExitCode"], capture_output=True, text=True, timeout=30
    ).stdout.strip()


@pytest.mark.slurm
def test_sbatch_trains_one_run(slurm_cluster, tiny_data, tmp_path):
    out = tmp_path / "run"
    job_id = submit(tmp_path, tiny_train_args(tiny_data, out))
    state = slurm_cluster.wait_job(job_id, timeout_s=300)
    log = tmp_path / f"cifar-hpc-{job_id}.out"  # --output=%x-%j.out, relative to the submission dir
    assert log.exists(), sorted(p.name for p in tmp_path.iterdir())
    text = log.read_text()
    assert state == "COMPLETED", text[-3000:]
    assert read_json(out / "result.json")["status"] == "completed"
    assert "GPUs 0" in text  # the simulated GPU was allocated: the script's --gpus-per-node=1 scheduled as is
    assert "cifar-hpc train exited with 0" in text
    assert job_exit_code(job_id) == "0:0"


@pytest.mark.slurm
def test_sbatch_failed_training_fails_the_job(slurm_cluster, tiny_data, tmp_path):
    job_id = submit(tmp_path, [*tiny_train_args(tiny_data, tmp_path / "run"), "--model", "bogus"])
    state = slurm_cluster.wait_job(job_id, timeout_s=300)
    text = (tmp_path / f"cifar-hpc-{job_id}.out").read_text()
    assert state == "FAILED", text[-3000:]
    assert "cifar-hpc train exited with 2" in text  # the CLI's exit code for bad input
    assert job_exit_code(job_id) == "2:0"  # the script's own exit code is the training's
