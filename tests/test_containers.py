"""containers/: the Dockerfile, the Apptainer definition, the entrypoint, and a real image trained in under Slurm.

The static tests are cheap and always run. The real one builds the image with podman (or docker) on a
locally made stand-in for the NGC base (containers/build-local-base.sh: Debian bookworm + PyPI's CUDA torch,
~6 GB) and runs slurm/train.sbatch with CIFAR_HPC_RUNTIME=podman on the local cluster. A fresh machine
needs ~7 minutes for it (measured 6 min 28 s with apt packages already installed; ~36 s once the base is cached), so it only runs with CIFAR_HPC_CONTAINER_TESTS=1.
CIFAR_HPC_CONTAINER_RUNTIME=docker picks docker instead of podman.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_golden, read_json
from container_images import CONTAINER_TESTS, OPT_IN, RUNTIME, run_ok

from cifar_hpc.base.errors import UserError
from cifar_hpc.cluster.containers import (
    APPTAINER_PASSED,
    APPTAINER_WITHHELD,
    ContainerCommand,
    ContainerSpec,
    container_command,
)

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
    assert copies.index(next(c for c in copies if c.startswith("pyproject.toml"))) < copies.index(
        next(c for c in copies if c.startswith("cifar_hpc"))
    )
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
    assert (
        DOCKERIGNORE.read_text().splitlines()[
            next(i for i, l in enumerate(DOCKERIGNORE.read_text().splitlines()) if l and not l.startswith("#"))
        ]
        == "*"
    )
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


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "--epochs", "1"], "cifar-hpc train --epochs 1"),  # docker run IMAGE train ...
        (["cifar-hpc", "train", "--epochs", "1"], "cifar-hpc train --epochs 1"),  # what train.sbatch appends
        (["--version"], "cifar-hpc --version"),
        ([], "cifar-hpc --help"),
        (["echo", "plain", "command"], "plain command"),  # any other command runs as given
    ],
)
def test_entrypoint_runs_cifar_hpc_or_the_given_command(fake_cifar_hpc, args, expected):
    done = subprocess.run(
        ["sh", str(ENTRYPOINT), *args], env=fake_cifar_hpc, capture_output=True, text=True, timeout=10
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


# --- the Apptainer definition --------------------------------------------------------------------


def test_apptainer_def_is_built_from_the_docker_image():
    sections = def_sections(DEFFILE.read_text())
    header = {
        k.strip(): v.strip()
        for k, _, v in (
            line.partition(":") for line in sections["header"].splitlines() if line.strip() and not line.startswith("#")
        )
    }
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
    runscript = [
        line.strip() for line in sections["runscript"].splitlines() if line.strip() and not line.strip().startswith("#")
    ]
    assert runscript == ['exec cifar-hpc "$@"']
    environment = "\n".join(line for line in sections["environment"].splitlines() if not line.strip().startswith("#"))
    assert "WANDB_MODE" not in environment and not SECRET.search(environment)
    assert "--nv" in sections["help"] and "--bind" in sections["help"]


def test_apptainer_command_matches_the_image_layout():
    """train.sbatch runs `apptainer exec --cleanenv --nv --bind ... IMAGE cifar-hpc train`: the image has
    cifar-hpc on PATH (pip's console script) and the def keeps the Docker image's environment."""
    spec = ContainerSpec(runtime="apptainer", image="/c/cifar.sif", workdir="/work")
    prefix = container_command(spec, "cifar-hpc").prefix
    assert prefix[:2] == ("bash", "-c") and prefix[-1] == "cifar-hpc"
    exec_words = shlex.split(prefix[2].rpartition("; exec ")[2])
    assert exec_words[:4] == ["apptainer", "exec", "--cleanenv", "--nv"]
    assert exec_words[-3:] == ["/c/cifar.sif", "cifar-hpc", "$@"]
    assert 'cifar-hpc = "cifar_hpc.cli:main"' in (REPO / "pyproject.toml").read_text()


# --- the container command: one generator for submit and train.sbatch -----------------------------


def _matrix() -> list[tuple[ContainerSpec, str]]:
    binds = ("/data", "/scratch", "runs")  # a relative bind is under the working directory
    specs = [ContainerSpec(runtime="none", workdir="/work")]
    for runtime, image in [
        ("apptainer", "/c/cifar.sif"),
        ("pyxis", "nvcr.io#cifar-hpc:latest"),
        ("docker", "cifar-hpc:0.1.0"),
        ("podman", "cifar-hpc:0.1.0"),
    ]:
        gpus = {"apptainer": ["job", "none"], "pyxis": ["job"]}.get(runtime, ["job", "none", "0,1"])
        specs += [ContainerSpec(runtime=runtime, image=image, binds=binds, workdir="/work", gpus=g) for g in gpus]
    # python3: submitit's job; cifar-hpc: train.sbatch's (only the program's own words differ)
    return [(spec, "python3") for spec in specs] + [(spec, "cifar-hpc") for spec in specs if spec.gpus == "job"]


def test_container_commands_of_every_runtime_are_pinned():
    blocks = []
    for spec, program in _matrix():
        command = container_command(spec, program)
        blocks.append(
            f"# runtime={spec.runtime} gpus={spec.gpus} program={program}\n"
            f"srun: {shlex.join(command.srun_args)}\nprefix: {shlex.join(command.prefix)}\n"
        )
    assert_golden("container_prefixes.txt", "\n".join(blocks))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("runtime", "singularity", "must be one of"),
        ("image", None, "needs an image"),
        ("workdir", "work", "absolute"),
        ("binds", ("/a,b",), "may not contain"),
        ("binds", ("/a:/b",), "may not contain"),
        ("gpus", "0;rm -rf /", "ids like"),
    ],
)
def test_a_bad_container_spec_is_one_line_user_error(field, value, message):
    fields = {"runtime": "docker", "image": "img", "workdir": "/work", field: value}
    with pytest.raises(UserError, match=message):
        ContainerSpec(**fields)


@pytest.mark.parametrize("runtime", ["apptainer", "pyxis"])
def test_gpu_ids_are_refused_where_the_runtime_maps_the_jobs_gpus_itself(runtime):
    with pytest.raises(UserError, match="docker/podman"):
        ContainerSpec(runtime=runtime, image="img", workdir="/work", gpus="0")


def test_no_container_ignores_binds_and_gpus():
    """runtime none runs the program as it is: a working dir with a comma must not stop a local run."""
    spec = ContainerSpec(runtime="none", workdir="/home/a,b", binds=("x:y",), gpus="none")
    assert container_command(spec, "/usr/bin/python3") == ContainerCommand((), ("/usr/bin/python3",))


@pytest.mark.parametrize(("gpus", "nv"), [("job", True), ("none", False)])
def test_apptainer_gets_nv_only_with_gpus(gpus, nv):
    spec = ContainerSpec(runtime="apptainer", image="i.sif", workdir="/work", gpus=gpus)
    assert ("--nv" in shlex.split(container_command(spec, "python3").prefix[2])) is nv


@pytest.fixture
def recorder_bin(tmp_path) -> Path:
    """A folder with `srun`, `docker` and `podman` that write their arguments (NUL-separated) and the
    W&B key they were given to $RECORD, instead of running anything."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    for name in ("srun", "docker", "podman"):
        fake = bin_dir / name
        fake.write_text(
            f'#!/bin/bash\nprintf "%s\\0" {name} "$@" > "$RECORD"\nprintf "%s" "${{WANDB_API_KEY:-}}" > "$RECORD.key"\n'
        )
        fake.chmod(0o755)
    return bin_dir


def _recorded(path: Path) -> list[str]:
    return path.read_text().split("\0")[:-1]


def _clean_env(**extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "CIFAR_HPC_", "WANDB_", "MASTER_"))}
    return {**keep, **extra}


SBATCH_CASES = [
    {},
    {"CIFAR_HPC_RUNTIME": "apptainer", "CIFAR_HPC_IMAGE": "/c/cifar.sif", "CIFAR_HPC_BINDS": "/data,runs"},
    {"CIFAR_HPC_RUNTIME": "apptainer", "CIFAR_HPC_IMAGE": "/c/cifar.sif", "CIFAR_HPC_CONTAINER_GPUS": "none"},
    {"CIFAR_HPC_RUNTIME": "pyxis", "CIFAR_HPC_IMAGE": "nvcr.io#cifar-hpc:latest", "CIFAR_HPC_BINDS": "/data"},
    {"CIFAR_HPC_RUNTIME": "docker", "CIFAR_HPC_IMAGE": "cifar-hpc:0.1.0", "CIFAR_HPC_BINDS": "/data,/scratch"},
    {"CIFAR_HPC_RUNTIME": "docker", "CIFAR_HPC_IMAGE": "cifar-hpc:0.1.0", "CIFAR_HPC_CONTAINER_GPUS": "2,3"},
    {"CIFAR_HPC_RUNTIME": "podman", "CIFAR_HPC_IMAGE": "localhost/cifar-hpc:t", "CIFAR_HPC_CONTAINER_GPUS": "none"},
]


@pytest.mark.parametrize("job_env", SBATCH_CASES, ids=lambda e: e.get("CIFAR_HPC_RUNTIME", "none"))
def test_train_sbatch_runs_the_command_the_python_side_generates(job_env, recorder_bin, tmp_path):
    """The real script up to srun (a recorder here): its words are container_command's, for every runtime."""
    record = tmp_path / "srun.args"
    scratch = "/local/scratch/job"  # the node's TMPDIR: bound like the data, so that staging works inside
    env = _clean_env(
        **job_env,
        RECORD=str(record),
        SLURM_CPUS_PER_TASK="4",
        TMPDIR=scratch,
        PATH=os.pathsep.join([str(recorder_bin), str(Path(sys.executable).parent), "/usr/bin", "/bin"]),
    )
    done = subprocess.run(
        ["bash", str(SBATCH), "--epochs", "1"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    spec = ContainerSpec(
        runtime=job_env.get("CIFAR_HPC_RUNTIME", "none"),
        image=job_env.get("CIFAR_HPC_IMAGE"),
        binds=(*(b for b in job_env.get("CIFAR_HPC_BINDS", "").split(",") if b), scratch),
        workdir=str(tmp_path),
        gpus=job_env.get("CIFAR_HPC_CONTAINER_GPUS", "job"),
    )
    expected = [
        "srun",
        "--kill-on-bad-exit=1",
        "--cpus-per-task=4",
        *container_command(spec, "cifar-hpc").words,
        "train",
        "--epochs",
        "1",
    ]
    assert _recorded(record) == expected


def test_train_sbatch_with_a_bad_container_setting_stops_before_srun(recorder_bin, tmp_path):
    record = tmp_path / "srun.args"
    env = _clean_env(
        CIFAR_HPC_RUNTIME="docker",
        RECORD=str(record),
        PATH=os.pathsep.join([str(recorder_bin), str(Path(sys.executable).parent), "/usr/bin", "/bin"]),
    )
    done = subprocess.run(
        ["bash", str(SBATCH), "--epochs", "1"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and not record.exists()
    assert "cifar-hpc: error: container runtime docker needs an image" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("runtime", "gpus", "gpu_words"),
    [
        ("docker", "job", ["--gpus", '"device=0,1"']),  # the quotes are docker's CSV syntax for two GPUs
        ("podman", "job", ["--device", "nvidia.com/gpu=0", "--device", "nvidia.com/gpu=1"]),
        ("docker", "3", ["--gpus", '"device=3"']),
        ("podman", "none", []),
    ],
)
def test_docker_and_podman_start_each_task_with_its_own_variables_by_name(
    runtime, gpus, gpu_words, recorder_bin, tmp_path
):
    """What each srun task runs: the runtime gets the task's SLURM_*/W&B/... variables by NAME, the W&B key's
    value only through its environment, the job's GPUs, and the program with its arguments."""
    record = tmp_path / "run.args"
    task_env = {
        "SLURM_PROCID": "3",
        "SLURM_LOCALID": "1",
        "SLURMD_NODENAME": "n2",
        "SLURM_JOB_GPUS": "0,1",
        "SUBMITIT_EXECUTOR": "slurm",
        "WANDB_API_KEY": "secret-key-value",
        "MASTER_ADDR": "n1",
        "TMPDIR": str(tmp_path),
        "CUDA_VISIBLE_DEVICES": "0,1",
        "UNRELATED": "x",
    }
    env = _clean_env(**task_env, RECORD=str(record), PATH=os.pathsep.join([str(recorder_bin), "/usr/bin", "/bin"]))
    spec = ContainerSpec(runtime=runtime, image="img:1", binds=("/data",), workdir="/work", gpus=gpus)
    done = subprocess.run(
        [*container_command(spec, "python3").prefix, "-u", "-m", "submitit.core._submit", "/f"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    argv = _recorded(record)
    assert argv[:9] == [runtime, "run", "--rm", "--init", "--ipc=host", "--network", "host", "-w", "/work"]
    assert argv[9:13] == ["-v", "/data:/data", "-v", "/work:/work"]
    # where the run happens, for its result.json (nothing inside a docker container names its image)
    assert argv[13:17] == ["-e", f"CIFAR_HPC_IN_CONTAINER={runtime}", "-e", "CIFAR_HPC_IN_IMAGE=img:1"]
    forwarded = {argv[i + 1] for i, word in enumerate(argv) if word == "-e" and "=" not in argv[i + 1]}
    assert forwarded == {
        name
        for name in env
        if fnmatch.fnmatchcase(name, "SLURM_*")
        or name.startswith(("SLURMD_", "SUBMITIT_", "WANDB_", "MASTER_"))
        or name == "TMPDIR"
    }
    assert {"SLURM_PROCID", "SLURMD_NODENAME", "WANDB_API_KEY", "MASTER_ADDR", "TMPDIR"} <= forwarded
    assert "CUDA_VISIBLE_DEVICES" not in forwarded and "UNRELATED" not in forwarded
    assert not any("secret-key-value" in word for word in argv)  # by name only: never on a command line
    assert (tmp_path / "run.args.key").read_text() == "secret-key-value"  # ...but the runtime has it
    rest = argv[17 + 2 * len(forwarded) :]
    assert rest == [*gpu_words, "img:1", "python3", "-u", "-m", "submitit.core._submit", "/f"]


LOGIN_NODE_PYTHON = {  # a login node's Python set-up: wrong for the image's Python
    "PYTHONPATH": "/home/u/.local/lib/python3.9/site-packages",
    "PYTHONHOME": "/opt/login-python",
    "VIRTUAL_ENV": "/home/u/venv",
    "LD_LIBRARY_PATH": "/opt/login-python/lib",
    "CONDA_PREFIX": "/opt/conda",
    "CONDA_DEFAULT_ENV": "base",
}


def test_apptainer_gets_the_tasks_variables_on_purpose_and_nothing_else(tmp_path):
    """--cleanenv, then only APPTAINER_PASSED crosses, each as APPTAINERENV_NAME in apptainer's own
    environment (the task's values, never on its command line); the login node's Python set-up and
    the W&B key stay out. (A recorder stands in for apptainer; tests/test_apptainer.py looks inside.)"""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apptainer"
    fake.write_text('#!/bin/bash\nprintf "%s\\0" "$@" > "$RECORD"\nenv -0 > "$RECORD.env"\n')
    fake.chmod(0o755)
    record = tmp_path / "apptainer.args"
    task_env = {
        **LOGIN_NODE_PYTHON,
        "SLURM_PROCID": "3",
        "SLURMD_NODENAME": "n2",
        "SUBMITIT_EXECUTOR": "slurm",
        "WANDB_MODE": "offline",
        "WANDB_API_KEY": "secret-key-value",
        "MASTER_ADDR": "n1",
        "TMPDIR": str(tmp_path),
        "CUDA_VISIBLE_DEVICES": "0,1",
        "CIFAR_HPC_CONTAINER_GPUS": "job",
        "NCCL_SOCKET_IFNAME": "ib0",
        "https_proxy": "http://proxy:3128",
        "UNRELATED": "x",
    }
    env = _clean_env(**task_env, RECORD=str(record), PATH=os.pathsep.join([str(bin_dir), "/usr/bin", "/bin"]))
    spec = ContainerSpec(runtime="apptainer", image="/c/cifar.sif", binds=("/data",), workdir="/work")
    done = subprocess.run(
        [*container_command(spec, "python3").prefix, "-u", "-m", "submitit.core._submit", "/f"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert _recorded(record) == [
        *("exec", "--cleanenv", "--nv", "--bind", "/data,/work", "--pwd", "/work", "/c/cifar.sif"),
        *("python3", "-u", "-m", "submitit.core._submit", "/f"),
    ]
    seen = dict(item.split("=", 1) for item in (tmp_path / "apptainer.args.env").read_text().split("\0") if item)
    handed = {name[len("APPTAINERENV_") :]: value for name, value in seen.items() if name.startswith("APPTAINERENV_")}
    assert handed == {
        name: value
        for name, value in env.items()
        if any(fnmatch.fnmatchcase(name, p) for p in APPTAINER_PASSED) and name not in APPTAINER_WITHHELD
    }
    assert {"SLURM_PROCID", "CUDA_VISIBLE_DEVICES", "WANDB_MODE", "TMPDIR", "NCCL_SOCKET_IFNAME"} <= handed.keys()
    assert handed["SLURM_PROCID"] == "3" and handed["CIFAR_HPC_CONTAINER_GPUS"] == "job"
    assert not {"WANDB_API_KEY", "UNRELATED", *LOGIN_NODE_PYTHON} & handed.keys()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, {"runtime": "none", "image": None}),  # bare metal, even on a host that carries a /.dockerenv
        ({"APPTAINER_CONTAINER": "/c/cifar.sif"}, {"runtime": "apptainer", "image": "/c/cifar.sif"}),
        ({"CIFAR_HPC_IN_CONTAINER": "podman", "CIFAR_HPC_IN_IMAGE": "img:1"}, {"runtime": "podman", "image": "img:1"}),
    ],
)
def test_a_run_records_the_container_it_ran_in(env, expected, monkeypatch):
    from cifar_hpc.training.provenance import container

    for name in ("APPTAINER_CONTAINER", "SINGULARITY_CONTAINER", "CIFAR_HPC_IN_CONTAINER", "CIFAR_HPC_IN_IMAGE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert container() == expected


def test_container_prefix_command_imports_nothing_heavy():
    code = (
        "import sys, cifar_hpc.cli.containers, cifar_hpc.cluster.containers; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'lightning', 'pandas', 'scipy', 'submitit'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


# --- the real thing: build, then train inside the container under Slurm ---------------------------


@pytest.mark.container
@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.skipif(not CONTAINER_TESTS, reason=OPT_IN)
def test_train_sbatch_trains_inside_the_container(cifar_hpc_image, slurm_cluster, tiny_data, tmp_path):
    config = json.loads(run_ok([RUNTIME, "image", "inspect", cifar_hpc_image], timeout=60).stdout)[0]
    env = (config.get("Config") or {}).get("Env") or []
    assert not any(e.startswith(("WANDB_", "PIP_CERT=")) or SECRET.search(e.split("=")[0]) for e in env), env
    # what the image itself runs: its Python and torch differ from this host's (Debian 3.11.2 + torch 2.14.1)
    probe = "import sys, torch; print(sys.version.split()[0], torch.__version__)"
    image_versions = run_ok(
        [RUNTIME, "run", "--rm", "--network", "host", cifar_hpc_image, "python3", "-c", probe], timeout=120
    ).stdout.split()
    import torch

    host_versions = [sys.version.split()[0], torch.__version__]
    assert image_versions != host_versions, "the stand-in base must differ from the host to prove where training ran"

    out = tmp_path / "run"
    job_env = dict(
        os.environ,
        CIFAR_HPC_RUNTIME=RUNTIME,
        CIFAR_HPC_IMAGE=cifar_hpc_image,
        CIFAR_HPC_BINDS=str(tiny_data),
        CIFAR_HPC_CONTAINER_GPUS="none",
    )  # the cluster's GPUs are simulated
    args = [
        "--data-dir",
        tiny_data,
        "--out",
        out,
        "--epochs",
        1,
        "--batch-size",
        12,
        "--num-workers",
        2,
        "--no-stage",
        "--wandb-mode",
        "offline",
    ]
    done = run_ok(
        ["sbatch", "--parsable", "--cpus-per-task=1", str(SBATCH), *map(str, args)],
        timeout=30,
        cwd=tmp_path,
        env=job_env,
    )
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
    assert result["container"] == {"runtime": RUNTIME, "image": cifar_hpc_image}
    # --rm: nothing left behind
    left = run_ok([RUNTIME, "ps", "-a", "-q", "--filter", f"ancestor={cifar_hpc_image}"], timeout=60).stdout.split()
    assert left == []


@pytest.mark.container
@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.skipif(not CONTAINER_TESTS, reason=OPT_IN)
def test_submit_runs_the_array_inside_the_container(cifar_hpc_image, slurm_cluster, tmp_path, monkeypatch, capsys):
    """`cifar-hpc submit` with a container profile: submitit's task is unpickled and trained inside
    the image (the bash -c wrapper forwards each task's SLURM_* by name)."""
    from conftest import results, run_cli, write_grid

    monkeypatch.chdir(tmp_path)
    grid = write_grid(tmp_path, "ctr", '[[cells]]\nname = "baseline"\n')
    profile = tmp_path / "container-profile.toml"
    profile.write_text(
        f'partition = "debug"\ngpus_per_node = 0\ncpus_per_task = 1\nmem_gb = 3\ntime_min = 30\n'
        f'runtime = "{RUNTIME}"\nimage = "{cifar_hpc_image}"\n'
    )
    done = run_cli(["submit", "--grid", grid, "--profile", profile, "--wait", "--wait-timeout-min", "10"], capsys)
    assert done.code == 0, done.out + done.err
    (result,) = results(tmp_path / "runs" / "ctr").values()
    assert result["status"] == "completed"
    assert result["versions"]["git_commit"] is None and result["versions"]["python"] != sys.version.split()[0]
    assert result["container"] == {"runtime": RUNTIME, "image": cifar_hpc_image}
