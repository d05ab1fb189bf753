"""Where and with what a run was trained, for its ``result.json``: versions, git commit, hosts, requeues."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning
import torch

import cifar_hpc
from cifar_hpc.training import telemetry


def provenance() -> dict[str, Any]:
    """The result's ``requeues``, ``hosts`` and ``versions`` (a collective when a process group is up:
    every rank calls it)."""
    return {"requeues": requeues(), "hosts": hosts(), "versions": versions()}


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
