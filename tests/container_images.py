"""The container tests' images as pytest fixtures (a plugin module: ``pytest_plugins`` in conftest.py).

``cifar_hpc_image``: the project's OCI image built with podman (or docker) on the local stand-in base
(containers/build-local-base.sh), once per session; both are cached by the runtime (about 7 minutes on a
fresh machine, about 40 s after). ``apptainer``: the cluster's Apptainer (``APPTAINER``, else ``apptainer``
on PATH), or a skip with the reason. ``apptainer_sandbox``: that image as an Apptainer sandbox folder,
built from ``containers/cifar-hpc.def`` the way containers/README.md says (``podman image mount``, then
``apptainer build --sandbox`` with ``BOOTSTRAP=localimage``: about 25 s, 6 GB, removed after the session).

Opt-in: ``CIFAR_HPC_CONTAINER_TESTS=1`` (``make test`` sets it; it also installs what Apptainer needs and
sets ``APPTAINER`` when ``../shared/tools/apptainer`` exists).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONTAINERS = REPO / "containers"
CONTAINER_TESTS = os.environ.get("CIFAR_HPC_CONTAINER_TESTS") == "1"
RUNTIME = os.environ.get("CIFAR_HPC_CONTAINER_RUNTIME", "podman")
IMAGE = "localhost/cifar-hpc:pytest"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
OPT_IN = "opt-in (builds a ~6.5 GB image, ~7 min on a fresh machine): CIFAR_HPC_CONTAINER_TESTS=1"


def run_ok(args: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """``args`` run to a zero exit, or the test fails with the command's output."""
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert done.returncode == 0, (
        f"{' '.join(map(str, args))} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done


@pytest.fixture(scope="session")
def cifar_hpc_image() -> str:
    """The project image on the local stand-in base; both cached by the runtime (rebuilt only on change)."""
    if not CONTAINER_TESTS:
        pytest.skip(OPT_IN)
    base = run_ok(["bash", str(CONTAINERS / "build-local-base.sh"), RUNTIME], timeout=1800).stdout.split()[-1]
    build = [
        RUNTIME,
        "build",
        "--network",
        "host",
        "-f",
        str(CONTAINERS / "Dockerfile"),
        "-t",
        IMAGE,
        "--build-arg",
        f"BASE={base}",
        "--build-arg",
        "PIP_EXTRA_ARGS=--progress-bar off",
    ]
    if RUNTIME == "podman" and HOST_CA.exists():
        # PyPI is reached through a TLS-intercepting proxy here: the host's CA bundle, for the build only
        build += ["-v", f"{HOST_CA}:/run/host-ca.crt:ro", "--build-arg", "PIP_CERT=/run/host-ca.crt"]
    run_ok([*build, str(REPO)], timeout=900)
    return IMAGE


def find_apptainer() -> str | None:
    """The cluster's apptainer: ``APPTAINER`` (a path), else the one on PATH."""
    named = os.environ.get("APPTAINER")
    if named:
        return named if os.access(named, os.X_OK) else None
    return shutil.which("apptainer")


@pytest.fixture(scope="session")
def apptainer() -> Path:
    """The apptainer command (its folder goes on a job's PATH, as `module load apptainer` would put it)."""
    if not CONTAINER_TESTS:
        pytest.skip(OPT_IN)
    found = find_apptainer()
    if found is None:
        pytest.skip(
            "no apptainer: set APPTAINER=/path/to/bin/apptainer or put it on PATH (make test does, when "
            "../shared/tools/apptainer exists)"
        )
    return Path(found)


@pytest.fixture(scope="session")
def apptainer_sandbox(apptainer, cifar_hpc_image, tmp_path_factory) -> Path:
    """The image as an Apptainer sandbox folder, built from containers/cifar-hpc.def (README's sandbox route)."""
    if RUNTIME != "podman":
        pytest.skip("the sandbox is made from `podman image mount`: CIFAR_HPC_CONTAINER_RUNTIME=podman")
    mount = run_ok(["podman", "image", "mount", cifar_hpc_image], timeout=120).stdout.strip()
    sandbox = tmp_path_factory.mktemp("apptainer") / "cifar-hpc"
    started = time.monotonic()
    try:
        run_ok(
            [
                str(apptainer),
                "build",
                "--notest",  # the build's own %test needs CAP_SYS_RESOURCE, which root lacks here
                "--sandbox",
                "--build-arg",
                "BOOTSTRAP=localimage",
                "--build-arg",
                f"IMAGE={mount}",
                str(sandbox),
                str(CONTAINERS / "cifar-hpc.def"),
            ],
            timeout=900,
        )
    finally:
        subprocess.run(["podman", "image", "unmount", cifar_hpc_image], capture_output=True, timeout=120)
    print(f"apptainer sandbox built in {time.monotonic() - started:.1f} s")
    yield sandbox
    shutil.rmtree(sandbox, ignore_errors=True)  # 6 GB: pytest keeps its last three temp folders
