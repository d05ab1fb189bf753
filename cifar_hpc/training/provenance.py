"""Where and with what a run was trained, for its ``result.json``: versions, git commit, hosts, requeues,
the container it ran in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning
import torch

import cifar_hpc
from cifar_hpc.base import code_identity
from cifar_hpc.cluster.containers import RAN_IN
from cifar_hpc.training import telemetry

IMPORTED_CODE = code_identity.current()
"""The code this process imported, read as the training modules are imported (at a job's start): an
edit of the checkout during training changes the files, not what this process runs."""


def provenance() -> dict[str, Any]:
    """The result's ``requeues``, ``hosts``, ``versions``, ``code`` (``IMPORTED_CODE``) and ``container``
    (a collective when a process group is up: every rank calls it)."""
    return {
        "requeues": requeues(),
        "hosts": hosts(),
        "versions": versions(),
        "code": IMPORTED_CODE,
        "container": container(),
    }


def container() -> dict[str, str | None]:
    """Where this process runs: ``runtime`` (apptainer, docker, podman or none) and ``image`` (the .sif or
    sandbox folder, the image's name). Apptainer says so itself in every container; the docker/podman
    command of ``cifar_hpc.cluster.containers`` sets ``RAN_IN`` (files such as ``/.dockerenv`` are no
    proof: some hosts carry one). With ``versions``: a run in a container reports the image's Python,
    torch and cifar-hpc, not the submitting checkout's."""
    image = os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER")
    if image:
        return {"runtime": "apptainer", "image": image}
    runtime = os.environ.get(RAN_IN[0])
    if runtime:
        return {"runtime": runtime, "image": os.environ.get(RAN_IN[1]) or None}
    return {"runtime": "none", "image": None}


def requeues() -> int:
    """How many times Slurm restarted this job (preemption, timeout, node failure)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)


def hosts() -> list[str]:
    """Host names of every process, gathered when a process group exists."""
    name = telemetry.host_name()  # Slurm's node name where set: simulated nodes share one host
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        names: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(names, name)
        return sorted(set(names))
    return [name]


def versions() -> dict[str, str | None]:
    """torch, Lightning, this package, its git commit (None outside a checkout) and Python."""
    return {
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "cifar_hpc": cifar_hpc.__version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
    }


def git_commit() -> str | None:
    """The commit of the checkout this package runs from, or None (an installed copy, no git)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(Path(cifar_hpc.__file__).parent), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
