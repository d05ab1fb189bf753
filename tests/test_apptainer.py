"""Apptainer for real: the project's image as a sandbox folder (built from containers/cifar-hpc.def),
run by the real ``apptainer`` through the command the jobs use, on the local Slurm cluster.

Opt-in like the other container tests (``CIFAR_HPC_CONTAINER_TESTS=1``), skipped with the reason when
no apptainer is found (``APPTAINER`` or PATH; ``make test`` provides the workplace's). The sandbox is
made once per session (``apptainer_sandbox``, about 25 s once the podman image exists); every run is
one epoch (the requeued one eight) on tiny generated data. Apptainer goes on the jobs' PATH through
the profile's setup lines, as ``module load apptainer`` does on a cluster.

The submitting side carries a login node's Python set-up (``PYTHONPATH`` with a ``torch`` that
refuses to import, ``PYTHONHOME``, ``VIRTUAL_ENV``, ``LD_LIBRARY_PATH``, ``CONDA_PREFIX``) and a W&B
key: none of it may reach the container, and the key no file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import read_json, results, run_cli, write_grid
from container_images import CONTAINER_TESTS, OPT_IN, run_ok

from cifar_hpc.base import code_identity
from cifar_hpc.cluster.containers import ContainerSpec, container_command
from cifar_hpc.cluster.image_check import probe
from cifar_hpc.study.manifest import JobRecord

REPO = Path(__file__).resolve().parents[1]
SBATCH = REPO / "slurm" / "train.sbatch"
FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # shaped like a W&B API key; never a real one

pytestmark = [pytest.mark.container, pytest.mark.skipif(not CONTAINER_TESTS, reason=OPT_IN)]


def login_node_env(folder: Path, *, python_home: bool = True) -> dict[str, str]:
    """What a login node's shell may hold that would break the image's Python if it crossed over."""
    poison = folder / "login-site-packages" / "torch"
    poison.mkdir(parents=True, exist_ok=True)
    (poison / "__init__.py").write_text('raise ImportError("the login node\'s PYTHONPATH reached the container")\n')
    env = {
        "PYTHONPATH": str(poison.parent),
        "VIRTUAL_ENV": "/home/u/venv",
        "LD_LIBRARY_PATH": "/opt/login-python/lib",
        "CONDA_PREFIX": "/opt/conda",
        "WANDB_API_KEY": FAKE_KEY,
    }
    if python_home:  # not for train.sbatch: its batch shell runs the login node's own cifar-hpc first
        env["PYTHONHOME"] = "/opt/login-python"
    return env


def on_path(apptainer: Path) -> str:
    """The setup line that puts apptainer on a job's PATH, as `module load apptainer` does on a cluster."""
    return f"export PATH={apptainer.parent}:$PATH"


def image_facts(sandbox: Path, apptainer: Path) -> dict:
    spec = ContainerSpec(runtime="apptainer", image=str(sandbox), workdir=str(REPO), gpus="none")
    facts = probe(spec, [on_path(apptainer)])
    assert "error" not in facts, facts
    return facts


def write_profile(folder: Path, sandbox: Path, apptainer: Path) -> Path:
    path = folder / "apptainer-profile.toml"
    path.write_text(
        'partition = "debug"\ngpus_per_node = 0\ncpus_per_task = 1\nmem_gb = 3\ntime_min = 30\n'
        f'runtime = "apptainer"\nimage = "{sandbox}"\n'
        f'setup = ["{on_path(apptainer)}"]\n'
    )
    return path


def assert_ran_inside(result: dict, sandbox: Path, facts: dict) -> None:
    """The run's own record: the container it ran in, and the image's Python and cifar-hpc code."""
    assert result["status"] == "completed", result.get("error")
    assert result["container"] == {"runtime": "apptainer", "image": str(sandbox)}
    assert result["versions"]["python"] == facts["python"] and result["versions"]["cifar_hpc"] == facts["cifar_hpc"]
    assert result["code"]["id"] == facts["code"] and result["versions"]["git_commit"] is None  # the image's copy


def test_only_the_chosen_variables_cross_into_apptainer(apptainer_sandbox, apptainer, tmp_path):
    """The generated command, run for real: --cleanenv keeps the login node's Python set-up and the W&B
    key out; the task's Slurm, W&B, CUDA and scratch variables arrive with their values; the binds and
    the working directory are there; no --nv without GPUs."""
    workdir = tmp_path / "work"
    data = tmp_path / "data"
    workdir.mkdir()
    data.mkdir()
    (data / "marker").write_text("bound")
    spec = ContainerSpec(runtime="apptainer", image=str(apptainer_sandbox), binds=(str(data),), workdir=str(workdir))
    show = (
        "import json, os; print(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd(), "
        f"'marker': open({str(data / 'marker')!r}).read()}}))"
    )
    env = {
        **os.environ,
        **login_node_env(tmp_path),
        "PATH": f"{apptainer.parent}{os.pathsep}{os.environ['PATH']}",
        "SLURM_PROCID": "1",
        "SLURM_JOB_ID": "77",
        "WANDB_MODE": "offline",
        "CUDA_VISIBLE_DEVICES": "0",
        "TMPDIR": str(tmp_path),
        "UNRELATED": "x",
    }
    started = time.monotonic()
    done = run_ok([*container_command(spec, "python3").prefix, "-c", show], timeout=120, env=env)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"apptainer exec of the sandbox, python3 -c: {time.monotonic() - started:.2f} s")
    inside = seen["env"]
    assert seen["cwd"] == str(workdir) and seen["marker"] == "bound"
    for name in ("SLURM_PROCID", "SLURM_JOB_ID", "WANDB_MODE", "CUDA_VISIBLE_DEVICES", "TMPDIR"):
        assert inside.get(name) == env[name], name
    leaked = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "CONDA_PREFIX", "WANDB_API_KEY", "UNRELATED"} & inside.keys()
    assert leaked == set()
    assert inside.get("LD_LIBRARY_PATH") != env["LD_LIBRARY_PATH"]  # apptainer's own, if any
    assert inside["APPTAINER_CONTAINER"] == str(apptainer_sandbox) and inside["MPLBACKEND"] == "Agg"  # the def's


@pytest.mark.slurm
def test_doctor_and_submit_check_the_image_before_anything_is_submitted(
    apptainer_sandbox, apptainer, slurm_cluster, tmp_path, monkeypatch, capsys
):
    """doctor probes the image through the jobs' own command: apptainer found by the setup lines, the
    image's Python and cifar-hpc those of this side. An image with another cifar-hpc is one FAIL line in
    doctor, and submit refuses it in one line before sbatch."""
    monkeypatch.chdir(tmp_path)
    grid = write_grid(tmp_path, "probe", '[[cells]]\nname = "baseline"\n')
    profile = write_profile(tmp_path, apptainer_sandbox, apptainer)
    facts = image_facts(apptainer_sandbox, apptainer)

    good = run_cli(["doctor", "--grid", grid, "--profile", profile, "--executor", "local"], capsys)
    (line,) = [line for line in good.out.splitlines() if line[6:].startswith("container")]
    if facts["code"] == code_identity.source_id():
        assert line.startswith("OK") and f"Python {facts['python']}, cifar-hpc {facts['cifar_hpc']}" in line
    else:  # the checkout changed since the image was built: said, not refused
        assert line.startswith("WARN") and "runs train the image's code" in line, line

    # another cifar-hpc in the image (here: put first on the image's Python path through APPTAINERENV_,
    # which a site or a user may set on purpose and so still crosses): one line, before anything runs
    other = tmp_path / "other-cifar-hpc" / "cifar_hpc"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text('__version__ = "0.0.1"\n')
    monkeypatch.setenv("APPTAINERENV_PYTHONPATH", str(other.parent))
    bad = run_cli(["doctor", "--grid", grid, "--profile", profile, "--executor", "local"], capsys)
    (line,) = [line for line in bad.out.splitlines() if line[6:].startswith("container")]
    assert bad.code == 1 and line.startswith("FAIL") and "cifar-hpc 0.0.1, this side" in line, bad.out
    refused = run_cli(["submit", "--grid", grid, "--profile", profile], capsys)
    assert refused.code == 2 and len(refused.err.strip().splitlines()) == 1, refused.err
    assert "cifar-hpc 0.0.1" in refused.err and "Traceback" not in refused.err
    assert not (tmp_path / "runs" / "probe" / "submitit").exists()  # nothing reached sbatch

    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # a node without apptainer, and setup lines that do not add it
    missing = run_cli(["doctor", "--profile", _profile_without_setup(tmp_path, apptainer_sandbox)], capsys)
    assert missing.code == 1 and "FAIL  container" in missing.out and "apptainer not found" in missing.out


def _profile_without_setup(folder: Path, sandbox: Path) -> Path:
    path = folder / "no-setup.toml"
    path.write_text(
        f'gpus_per_node = 0\ncpus_per_task = 1\ntime_min = 30\nruntime = "apptainer"\nimage = "{sandbox}"\n'
    )
    return path


def _wait_for(condition, what: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


@pytest.mark.slurm
@pytest.mark.slow
def test_studies_run_inside_apptainer_on_slurm(
    apptainer_sandbox, apptainer, slurm_cluster, tmp_path, monkeypatch, capsys
):
    """`submit --wait` of a two-run grid with an apptainer profile, then a `--pack 2` study whose task is
    requeued (`scontrol requeue`) mid-run and resumes; `collect` reads both. Every run ran inside the
    image: its result says apptainer and the sandbox, and the image's Python and code."""
    monkeypatch.chdir(tmp_path)
    facts = image_facts(apptainer_sandbox, apptainer)
    profile = write_profile(tmp_path, apptainer_sandbox, apptainer)
    for name, value in login_node_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    grid = write_grid(
        tmp_path,
        "appt",
        '[[cells]]\nname = "baseline"\n[[cells]]\nname = "+flip"\nset = { augment = { flip = true } }\n',
    )
    started = time.monotonic()
    done = run_cli(["submit", "--grid", grid, "--profile", profile, "--wait", "--wait-timeout-min", "8"], capsys)
    assert done.code == 0, done.out + done.err
    measured = {"smoke_submit_wait_s": round(time.monotonic() - started, 1)}
    smoke = results(tmp_path / "runs" / "appt")
    assert len(smoke) == 2
    for result in smoke.values():
        assert_ran_inside(result, apptainer_sandbox, facts)
    timing = next(iter(smoke.values()))["timing"]
    measured["inside"] = {k: timing[k] for k in ("imports_s", "data_s", "setup_s", "to_first_step_s")}

    # two runs packed into one task, requeued while the first trains: completed work is kept, the rest resumes
    epochs = 8
    cells = '[[cells]]\nname = "baseline"\nset = { checkpoint_every_s = 0 }\n'
    packed = write_grid(tmp_path, "packed", cells, epochs=epochs, seeds="[0, 1]")
    started = time.monotonic()
    assert run_cli(["submit", "--grid", packed, "--profile", profile, "--pack", "2"], capsys).code == 0
    study = tmp_path / "runs" / "packed"
    job = read_json(study / "study.json")["jobs"][0]
    task = JobRecord.from_dict(job).slurm_id(0)
    first = study / job["run_ids"][0] / "checkpoints" / "last.ckpt"
    _wait_for(first.exists, "no checkpoint appeared in the packed task")
    subprocess.run(["scontrol", "requeue", task], check=True, capture_output=True, timeout=30)
    assert slurm_cluster.wait_job(task, timeout_s=420) == "COMPLETED"
    measured["pack_requeued_s"] = round(time.monotonic() - started, 1)
    runs = results(study)
    assert len(runs) == 2
    for result in runs.values():
        assert_ran_inside(result, apptainer_sandbox, facts)
        assert result["requeues"] == 1 and result["epochs_run"] == epochs
    resumed = runs[job["run_ids"][0]]
    assert len(resumed["attempts"]) == 2 and min(int(e) for e in resumed["lightning"]["accumulation_by_epoch"]) >= 1

    for folder in (tmp_path / "runs" / "appt", study):
        table = run_cli(["collect", folder, "--format", "md"], capsys)
        assert table.code == 0 and "baseline" in table.out, table.err
    # the key was in the submitting environment: no file written holds it (scripts, pickles, logs, results)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert [str(p) for p in written if FAKE_KEY.encode() in p.read_bytes()] == []
    with capsys.disabled():
        print("apptainer studies:", json.dumps(measured))


@pytest.mark.slurm
@pytest.mark.slow
def test_train_sbatch_runs_inside_apptainer(apptainer_sandbox, apptainer, slurm_cluster, tiny_data, tmp_path):
    """`sbatch slurm/train.sbatch` with the container variables, as containers/README.md shows them."""
    facts = image_facts(apptainer_sandbox, apptainer)
    out = tmp_path / "run"
    job_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "CIFAR_HPC_"))},
        **login_node_env(tmp_path, python_home=False),
        "PATH": os.pathsep.join([str(apptainer.parent), str(Path(sys.executable).parent), os.environ["PATH"]]),
        "CIFAR_HPC_RUNTIME": "apptainer",
        "CIFAR_HPC_IMAGE": str(apptainer_sandbox),
        "CIFAR_HPC_BINDS": str(tiny_data),
        "CIFAR_HPC_CONTAINER_GPUS": "none",  # the cluster's GPUs are simulated
    }
    args = ["--data-dir", tiny_data, "--out", out, "--epochs", 1, "--batch-size", 12, "--no-stage"]
    args += ["--num-workers", 0, "--wandb-mode", "offline"]
    submitted = run_ok(
        ["sbatch", "--parsable", "--cpus-per-task=1", str(SBATCH), *map(str, args)],
        timeout=30,
        cwd=tmp_path,
        env=job_env,
    )
    job_id = submitted.stdout.strip().split(";")[0]
    state = slurm_cluster.wait_job(job_id, timeout_s=300)
    log = (tmp_path / f"cifar-hpc-{job_id}.out").read_text()
    assert state == "COMPLETED", log[-4000:]
    assert "runtime apptainer" in log and "cifar-hpc train exited with 0" in log
    assert_ran_inside(read_json(out / "result.json"), apptainer_sandbox, facts)
