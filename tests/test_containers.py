"""containers/: the Dockerfile, the Apptainer definition, the entrypoint, and a real image trained in under Slurm.

The static tests are cheap and always run. The real one builds the image with podman (or docker) on a
locally made stand-in for the NGC base (containers/build-local-base.sh: Debian bookworm + PyPI's CUDA torch,
~6 GB) and runs slurm/train.sbatch with CIFAR_HPC_RUNTIME=podman on the local cluster. A fresh machine
needs ~7 minutes for it (measured 6 min 28 s with apt packages already installed; ~36 s once the base is cached), so it only runs with CIFAR_HPC_CONTAINER_TESTS=1.
CIFAR_HPC_CONTAINER_RUNTIME=docker picks docker instead of podman.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import read_json

REPO = Path(__file__).resolve().parents[1]
CONTAINERS = REPO / "containers"
DOCKERFILE = CONTAINERS / "Dockerfile"
DEFFILE = CONTAINERS / "cifar-hpc.def"
ENTRYPOINT = CONTAINERS / "entrypoint.sh"
DOCKERIGNORE = REPO / ".dockerignore"
SBATCH = REPO / "slurm" / "train.sbatch"
SECRET = re.compile(r"(API_KEY|TOKEN|PASSWORD|SECRET)", re.IGNORECASE)


def instructions(text: str) -> list[tuple[str, str]]:
    """Dockerfile instructions as (KEYWORD, arguments), continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def def_sections(text: str) -> dict[str, str]:
    """An Apptainer definition's %sections as {name: body}; the header under the key "header"."""
    sections, name, body = {}, "header", []
    for line in text.splitlines():
        match = re.match(r"^%(\w+)\s*$", line)
        if match:
            sections[name] = "\n".join(body)
            name, body = match.group(1), []
        else:
            body.append(line)
    sections[name] = "\n".join(body)
    return sections


# --- the Dockerfile ------------------------------------------------------------------------------

def test_dockerfile_base_is_a_pinned_ngc_pytorch_tag_and_an_argument():
    steps = instructions(DOCKERFILE.read_text())
    assert steps[0][0] == "ARG"
    match = re.fullmatch(r"BASE=nvcr\.io/nvidia/pytorch:(\d\d)\.(\d\d)-py3", steps[0][1])
    assert match, steps[0]
    assert (int(match.group(1)), int(match.group(2))) >= (24, 7)  # 24.07 is the first with torch 2.4
    assert steps[1] == ("FROM", "${BASE}")


def test_dockerfile_installs_the_package_without_replacing_the_base_torch():
    steps = instructions(DOCKERFILE.read_text())
    copies = [rest for key, rest in steps if key == "COPY"]
    runs = [rest for key, rest in steps if key == "RUN"]
    assert any(c.startswith("pyproject.toml") for c in copies)
    assert any(c.startswith("cifar_hpc") for c in copies)
    # the deps layer comes before the code, so that editing code does not reinstall the dependencies
    assert copies.index(next(c for c in copies if c.startswith("pyproject.toml"))) < \
        copies.index(next(c for c in copies if c.startswith("cifar_hpc")))
    pip_runs = [r for r in runs if "pip install" in r]
    assert len(pip_runs) == 2 and all("--no-cache-dir" in r for r in pip_runs)
    assert "--no-deps" in pip_runs[1]
    # torch and torchvision pinned to the versions the base already has, through PIP_CONSTRAINT
    assert all("PIP_CONSTRAINT=" in r and "cifar-hpc-torch-constraints.txt" in r for r in pip_runs)
    assert '"torch", "torchvision"' in pip_runs[0]
    assert not any(re.search(r"pip install[^;]*\btorch(vision)?\b(?!-)", r) for r in runs)


def test_dockerfile_entrypoint_no_wandb_mode_no_secrets_and_shm_documented():
    text = DOCKERFILE.read_text()
    steps = instructions(text)
    assert ("ENTRYPOINT", '["/usr/local/bin/cifar-hpc-entrypoint"]') in steps
    assert any(key == "COPY" and rest.startswith("containers/entrypoint.sh ") for key, rest in steps)
    env = " ".join(rest for key, rest in steps if key in ("ENV", "ARG"))
    assert "WANDB_MODE" not in env and not SECRET.search(env)
    assert "--ipc=host" in text and "--shm-size" in text


def test_every_copy_source_is_in_the_build_context():
    """The build context is the repo root filtered by /.dockerignore (an allowlist)."""
    allowed = [line[1:].rstrip("/") for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")]
    assert DOCKERIGNORE.read_text().splitlines()[next(i for i, l in enumerate(DOCKERIGNORE.read_text().splitlines())
                                                      if l and not l.startswith("#"))] == "*"
    for key, rest in instructions(DOCKERFILE.read_text()):
        if key == "COPY" and not rest.startswith("--from"):
            *sources, _dest = rest.split()
            for source in sources:
                assert (REPO / source).exists(), source
                assert any(source.rstrip("/") == a or source.startswith(a + "/") for a in allowed), source


# --- the entrypoint --------------------------------------------------------------------------------

@pytest.fixture
def fake_cifar_hpc(tmp_path) -> dict[str, str]:
    """A PATH with a `cifar-hpc` that prints its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "cifar-hpc"
    fake.write_text('#!/bin/sh\necho "cifar-hpc $*"\n')
    fake.chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")


@pytest.mark.parametrize(("args", "expected"), [
    (["train", "--epochs", "1"], "cifar-hpc train --epochs 1"),          # docker run IMAGE train ...
    (["cifar-hpc", "train", "--epochs", "1"], "cifar-hpc train --epochs 1"),  # what train.sbatch appends
    (["--version"], "cifar-hpc --version"),
    ([], "cifar-hpc --help"),
    (["echo", "plain", "command"], "plain command"),                     # any other command runs as given
])
def test_entrypoint_runs_cifar_hpc_or_the_given_command(fake_cifar_hpc, args, expected):
    done = subprocess.run(["sh", str(ENTRYPOINT), *args], env=fake_cifar_hpc, capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


# --- the Apptainer definition --------------------------------------------------------------------

def test_apptainer_def_is_built_from_the_docker_image():
    sections = def_sections(DEFFILE.read_text())
    header = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in sections["header"].splitlines()
                                                   if line.strip() and not line.startswith("#"))}
    assert header["Bootstrap"] == "{{ BOOTSTRAP }}" and header["From"] == "{{ IMAGE }}"
    defaults = dict(line.strip().split("=", 1) for line in sections["arguments"].splitlines() if "=" in line)
    assert defaults["BOOTSTRAP"] in ("docker-daemon", "docker-archive")
    assert defaults["IMAGE"].startswith("cifar-hpc:")
    text = DEFFILE.read_text()
    # the registry and archive variants are documented with the exact build arguments
    assert "--build-arg BOOTSTRAP=docker " in text and "--build-arg BOOTSTRAP=docker-archive" in text


def test_apptainer_def_sections_runscript_environment():
    sections = def_sections(DEFFILE.read_text())
    assert {"labels", "environment", "runscript", "help", "test"} <= set(sections)
    runscript = [line.strip() for line in sections["runscript"].splitlines() if line.strip() and not line.strip().startswith("#")]
    assert runscript == ['exec cifar-hpc "$@"']
    environment = "\n".join(line for line in sections["environment"].splitlines() if not line.strip().startswith("#"))
    assert "WANDB_MODE" not in environment and not SECRET.search(environment)
    assert "--nv" in sections["help"] and "--bind" in sections["help"]


def test_apptainer_command_of_train_sbatch_matches_the_image_layout():
    """train.sbatch runs `apptainer exec --nv --bind ... IMAGE cifar-hpc train`: the image has cifar-hpc on PATH
    (pip's console script) and the def keeps the Docker image's environment."""
    assert "apptainer exec --nv --bind" in SBATCH.read_text()
    assert 'cifar-hpc = "cifar_hpc.cli:main"' in (REPO / "pyproject.toml").read_text()


# --- the real thing: build, then train inside the container under Slurm ---------------------------

CONTAINER_TESTS = os.environ.get("CIFAR_HPC_CONTAINER_TESTS") == "1"
RUNTIME = os.environ.get("CIFAR_HPC_CONTAINER_RUNTIME", "podman")
IMAGE = "localhost/cifar-hpc:pytest"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def _run(args: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert done.returncode == 0, f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="session")
def cifar_hpc_image() -> str:
    """The project image on the local stand-in base; both cached by the runtime (rebuilt only on change)."""
    base = _run(["bash", str(CONTAINERS / "build-local-base.sh"), RUNTIME], timeout=1800).stdout.split()[-1]
    build = [RUNTIME, "build", "--network", "host", "-f", str(DOCKERFILE), "-t", IMAGE, "--build-arg", f"BASE={base}",
             "--build-arg", "PIP_EXTRA_ARGS=--progress-bar off"]
    if RUNTIME == "podman" and HOST_CA.exists():
        # PyPI is reached through a TLS-intercepting proxy here: the host's CA bundle, for the build only
        build += ["-v", f"{HOST_CA}:/run/host-ca.crt:ro", "--build-arg", "PIP_CERT=/run/host-ca.crt"]
    _run([*build, str(REPO)], timeout=900)
    return IMAGE


@pytest.mark.container
@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.skipif(not CONTAINER_TESTS, reason="opt-in (builds a ~6.5 GB image, ~7 min on a fresh machine): CIFAR_HPC_CONTAINER_TESTS=1")
def test_train_sbatch_trains_inside_the_container(cifar_hpc_image, slurm_cluster, tiny_data, tmp_path):
    config = json.loads(_run([RUNTIME, "image", "inspect", cifar_hpc_image], timeout=60).stdout)[0]
    env = (config.get("Config") or {}).get("Env") or []
    assert not any(e.startswith(("WANDB_", "PIP_CERT=")) or SECRET.search(e.split("=")[0]) for e in env), env
    # what the image itself runs: its Python and torch differ from this host's (Debian 3.11.2 + torch 2.14.1)
    probe = "import sys, torch; print(sys.version.split()[0], torch.__version__)"
    image_versions = _run([RUNTIME, "run", "--rm", "--network", "host", cifar_hpc_image, "python3", "-c", probe],
                          timeout=120).stdout.split()
    import torch

    host_versions = [sys.version.split()[0], torch.__version__]
    assert image_versions != host_versions, "the stand-in base must differ from the host to prove where training ran"

    out = tmp_path / "run"
    job_env = dict(os.environ, CIFAR_HPC_RUNTIME=RUNTIME, CIFAR_HPC_IMAGE=cifar_hpc_image,
                   CIFAR_HPC_BINDS=str(tiny_data), CIFAR_HPC_CONTAINER_GPUS="none")  # the cluster's GPUs are simulated
    args = ["--data-dir", tiny_data, "--out", out, "--epochs", 1, "--batch-size", 12, "--num-workers", 2,
            "--no-stage", "--wandb-mode", "offline"]
    done = _run(["sbatch", "--parsable", "--cpus-per-task=1", str(SBATCH), *map(str, args)],
                timeout=30, cwd=tmp_path, env=job_env)
    job_id = done.stdout.strip().split(";")[0]
    state = slurm_cluster.wait_job(job_id, timeout_s=600)
    log = (tmp_path / f"cifar-hpc-{job_id}.out").read_text()
    assert state == "COMPLETED", log[-4000:]
    assert f"runtime {RUNTIME}" in log and "cifar-hpc train exited with 0" in log
    result = read_json(out / "result.json")
    assert result["status"] == "completed"
    # it ran inside the image: the result records the image's Python and torch, not the host's
    assert [result["versions"]["python"], result["versions"]["torch"]] == image_versions
    assert result["versions"]["git_commit"] is None  # installed from a wheel, not this checkout
    # --rm: nothing left behind
    left = _run([RUNTIME, "ps", "-a", "-q", "--filter", f"ancestor={cifar_hpc_image}"], timeout=60).stdout.split()
    assert left == []


@pytest.mark.container
@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.skipif(not CONTAINER_TESTS, reason="opt-in (builds a ~6.5 GB image, ~7 min on a fresh machine): CIFAR_HPC_CONTAINER_TESTS=1")
def test_submit_runs_the_array_inside_the_container(cifar_hpc_image, slurm_cluster, tmp_path, monkeypatch, capsys):
    """`cifar-hpc submit` with a container profile: submitit's task is unpickled and trained inside
    the image (the bash -c wrapper forwards each task's SLURM_* by name)."""
    from conftest import results, run_cli, write_grid

    monkeypatch.chdir(tmp_path)
    grid = write_grid(tmp_path, "ctr", '[[cells]]\nname = "baseline"\n')
    profile = tmp_path / "container-profile.toml"
    profile.write_text(f'partition = "debug"\ngpus_per_node = 0\ncpus_per_task = 1\nmem_gb = 3\ntime_min = 30\n'
                       f'runtime = "{RUNTIME}"\nimage = "{cifar_hpc_image}"\n')
    done = run_cli(["submit", "--grid", grid, "--profile", profile, "--wait", "--wait-timeout-min", "10"], capsys)
    assert done.code == 0, done.out + done.err
    (result,) = results(tmp_path / "runs" / "ctr").values()
    assert result["status"] == "completed"
    assert result["versions"]["git_commit"] is None and result["versions"]["python"] != sys.version.split()[0]
