"""The local Slurm cluster as a pytest fixture (a plugin module: ``pytest_plugins = ["slurm_cluster"]``).

``slurm_cluster`` runs ``slurm/start-local-cluster.sh start`` once per session (idempotent: about a
second when the cluster is already up) and yields helpers that never block without a limit. Tests
that need Slurm use it, in CI too: when the cluster cannot start, the fixture FAILS with the script's
output instead of skipping, so a broken cluster cannot pass as a green run.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
START_SCRIPT = REPO / "slurm" / "start-local-cluster.sh"
START_TIMEOUT_S = 600  # a fresh machine installs slurm, munge and MariaDB with apt first

# States after which a job never runs again (PREEMPTED/REQUEUED jobs come back, so they are not here).
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}


def _run(args: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


@dataclass(frozen=True)
class SlurmCluster:
    """Helpers around the running local cluster."""

    start_output: str

    def sacct_state(self, job_id: str | int) -> str | None:
        """The job's state in accounting (``CANCELLED by 0`` → ``CANCELLED``), None if not recorded yet.
        For an array, the first task's state."""
        out = _run(["sacct", "-X", "-n", "-P", "-j", str(job_id), "--format=State"]).stdout.split()
        return out[0] if out else None

    def squeue_state(self, job_id: str | int) -> str | None:
        """The job's state in the queue, None once it has left it."""
        out = _run(["squeue", "-h", "-j", str(job_id), "-o", "%T"]).stdout.split()
        return out[0] if out else None

    def wait_job(self, job_id: str | int, timeout_s: float = 300, poll_s: float = 1.0) -> str:
        """Poll until the job reaches a final state and return it. On timeout, scancel the job and raise."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.sacct_state(job_id)
            if state in FINAL_STATES:
                return state
            if state is None and self.squeue_state(job_id) is None:
                # accounting may lag the queue by a moment; a job known to neither is an error
                time.sleep(poll_s)
                if self.sacct_state(job_id) is None and self.squeue_state(job_id) is None:
                    raise LookupError(f"Slurm job {job_id} is unknown to both sacct and squeue")
            if time.monotonic() > deadline:
                _run(["scancel", str(job_id)])
                raise TimeoutError(
                    f"Slurm job {job_id} still {state or 'unknown'} after {timeout_s:.0f} s; cancelled it"
                )
            time.sleep(poll_s)


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """The local Slurm cluster, started (or found running) once per session."""
    try:
        done = _run(["bash", str(START_SCRIPT), "start"], timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired as slow:
        output = "".join(
            part.decode(errors="replace") if isinstance(part, bytes) else part or ""
            for part in (slow.stdout, slow.stderr)
        )  # partial output is bytes on POSIX, even with text=True
        pytest.fail(f"{START_SCRIPT} start did not finish in {START_TIMEOUT_S} s:\n{output}", pytrace=False)
    if done.returncode != 0:
        pytest.fail(f"{START_SCRIPT} start failed (exit {done.returncode}):\n{done.stdout}{done.stderr}", pytrace=False)
    yield SlurmCluster(start_output=done.stdout + done.stderr)
