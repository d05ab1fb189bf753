"""The one generator of container commands: how a program starts inside apptainer, docker, podman or pyxis.

Both ways of running a job use it: ``cifar-hpc submit`` (``executors.container_python``: submitit's
``python3``) and ``slurm/train.sbatch`` (``cifar-hpc container-prefix``: ``cifar-hpc``). A
``ContainerSpec`` says what to run where; ``container_command`` returns the argv words to put
between ``srun``'s own options and the program's arguments, split into extra srun options (pyxis)
and the prefix that starts the program. Pure functions, no environment read here: per-task values
(``SLURM_PROCID``, ``SLURM_JOB_GPUS``, ...) are read by the generated command when each srun task
starts, never at generation time.

What crosses into the container, on purpose (values are read per task, never written anywhere):

* docker/podman: the ``FORWARDED`` variables by NAME (``-e NAME``); the runtime copies each value
  from the task's own environment (the W&B key too: a docker container does not see ``~/.netrc``).
* apptainer: ``--cleanenv`` (the host's environment stays out: a login node's ``PYTHONPATH``,
  ``PYTHONHOME``, ``VIRTUAL_ENV``, ``LD_LIBRARY_PATH`` or ``CONDA_*`` would break the image's
  Python) plus the ``APPTAINER_PASSED`` variables, each exported as ``APPTAINERENV_NAME`` by the
  task's own bash, which Apptainer turns back into ``NAME`` inside. ``WANDB_API_KEY`` is not among
  them: Apptainer mounts the home folder, where W&B finds the key in ``~/.netrc``.
* pyxis/enroot passes the task's environment through itself.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass
from typing import Literal, get_args

from cifar_hpc.base.errors import UserError

Runtime = Literal["none", "apptainer", "docker", "podman", "pyxis"]
RUNTIMES: tuple[str, ...] = get_args(Runtime)

# What a training task inside docker/podman needs from its environment, forwarded by name:
# Slurm's and srun's variables (Lightning's SLURMEnvironment builds the DDP group from them; SLURM_TMPDIR
# is the scratch), the node name (SLURMD_NODENAME), submitit's, W&B's (WANDB_API_KEY, WANDB_MODE, ...),
# the DDP rendezvous and the scratch folder. CUDA_VISIBLE_DEVICES is NOT forwarded: the container's
# GPUs are already just this job's, numbered from 0 inside.
FORWARDED: tuple[str, ...] = ("SLURM_*", "SLURMD_*", "SUBMITIT_*", "WANDB_*", "MASTER_*", "TMPDIR")

# What an apptainer task gets from its environment (everything else stays out: --cleanenv). Besides
# FORWARDED: the project's own knobs, the GPUs Slurm gave the job (--nv shows the node's GPUs, not
# renumbered), the NCCL/torch tuning a cluster's modules or a user set, thread counts, and the
# proxies that W&B online needs on nodes behind one.
APPTAINER_PASSED: tuple[str, ...] = (
    *FORWARDED,
    "CIFAR_HPC_*",
    "CUDA_VISIBLE_DEVICES",
    "NCCL_*",
    "TORCH_*",
    "TORCHINDUCTOR_*",
    "PYTORCH_*",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    *(p for name in ("http_proxy", "https_proxy", "no_proxy") for p in (name, name.upper())),
)
RAN_IN = ("CIFAR_HPC_IN_CONTAINER", "CIFAR_HPC_IN_IMAGE")
"""Set by the docker/podman command to its runtime and image, so that a run can say where it ran (nothing
inside a docker container names its image; apptainer sets ``APPTAINER_CONTAINER`` itself)."""
APPTAINER_WITHHELD: tuple[str, ...] = ("WANDB_API_KEY",)
"""Matched by ``APPTAINER_PASSED`` but kept out: the job reads the key from ``~/.netrc`` (home is mounted)."""

_GPU_IDS = re.compile(r"[A-Za-z0-9_-]+(,[A-Za-z0-9_-]+)*")  # "0,1" or GPU UUIDs: nothing a shell interprets


@dataclass(frozen=True, kw_only=True)
class ContainerSpec:
    """What to run where: one container set-up, shared by every task of a job."""

    runtime: Runtime = "none"
    """``none`` runs the program from the host's PATH; the others wrap it in their container."""
    image: str | None = None
    """A .sif file, a sandbox folder (an unpacked root file system) or a ``docker://`` URI (apptainer),
    an image name (docker, podman), an enroot URI such as ``registry#group/image:tag`` (pyxis)."""
    binds: tuple[str, ...] = ()
    """Host folders mounted at the same path inside (data, results, scratch): the run's config
    records absolute paths. Relative ones are taken from ``workdir``; ``workdir`` is always added."""
    workdir: str = "/"
    """The task's working directory, absolute; mounted and made the container's working directory."""
    gpus: str = "job"
    """GPUs handed to the container: ``job`` (the job's own, ``$SLURM_JOB_GPUS`` read when the task
    starts), ``none`` (e.g. a CPU job, or simulated GPUs), or ids such as ``0,1`` (docker/podman only)."""

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise UserError(f"container runtime must be one of {', '.join(RUNTIMES)}, not {self.runtime!r}")
        if self.runtime == "none":
            return  # nothing is mounted or handed over: the program runs as it is
        if not self.image:
            raise UserError(f"container runtime {self.runtime} needs an image")
        if not posixpath.isabs(self.workdir):
            raise UserError(f"container working directory must be an absolute path, not {self.workdir!r}")
        for path in (self.workdir, *self.binds):
            # ',' separates apptainer's --bind list and pyxis' mounts, ':' separates host and container paths
            if any(c in path for c in ",:\n"):
                raise UserError(f"container bind {path!r}: a folder to mount may not contain ',', ':' or a newline")
        if self.image and "\n" in self.image:
            raise UserError("container image: one line, no newline")
        if self.gpus not in ("job", "none") and not _GPU_IDS.fullmatch(self.gpus):
            raise UserError(f"container GPUs must be 'job', 'none' or ids like 0,1, not {self.gpus!r}")
        if self.gpus not in ("job", "none") and self.runtime in ("apptainer", "pyxis"):
            raise UserError(
                f"GPU ids ({self.gpus}) are for docker/podman; {self.runtime} uses the job's own GPUs (or none: 'none')"
            )

    @property
    def mounts(self) -> tuple[str, ...]:
        """Every folder to mount, absolute, each once, in the order given, the working dir included."""
        paths = [posixpath.normpath(posixpath.join(self.workdir, b)) for b in self.binds if b]
        return tuple(dict.fromkeys([*paths, posixpath.normpath(self.workdir)]))


@dataclass(frozen=True)
class ContainerCommand:
    """``srun [its options] *srun_args *prefix [the program's arguments]``."""

    srun_args: tuple[str, ...]
    """Extra srun options (pyxis runs the image through srun itself)."""
    prefix: tuple[str, ...]
    """argv words that start the program inside the container; its arguments are appended."""

    @property
    def words(self) -> tuple[str, ...]:
        """Everything between srun's own options and the program's arguments."""
        return (*self.srun_args, *self.prefix)


def container_command(spec: ContainerSpec, program: str) -> ContainerCommand:
    """The command that starts ``program`` (``python3``, ``cifar-hpc``) in ``spec``'s container."""
    if spec.runtime == "none":
        return ContainerCommand((), (program,))
    if spec.runtime == "apptainer":
        return ContainerCommand((), ("bash", "-c", apptainer_script(spec, program), program))
    if spec.runtime == "pyxis":
        # enroot maps the job's GPUs and passes the task's environment through itself
        mounts = ",".join(f"{m}:{m}" for m in spec.mounts)
        return ContainerCommand(
            (f"--container-image={spec.image}", f"--container-mounts={mounts}", f"--container-workdir={spec.workdir}"),
            (program,),
        )
    script = run_script(spec, program)
    return ContainerCommand((), ("bash", "-c", script, program))


def run_script(spec: ContainerSpec, program: str) -> str:
    """docker/podman: a one-line bash script run by each srun task, because the values it needs
    (the task's own SLURM_PROCID, SLURM_LOCALID, ..., the job's GPUs) exist only there. The
    program's arguments arrive as "$@".

    --init: Python as PID 1 ignores SIGTERM (a cancelled job would keep its GPUs); --ipc=host:
    docker's 64 MB /dev/shm kills DataLoader workers; --network host: DDP ranks on other nodes
    reach MASTER_ADDR. The runtime's client forwards srun's signals (USR2: requeue) to the
    container (--sig-proxy, docker's default), and `exec` makes that client the task itself.
    """
    ids = "${SLURM_JOB_GPUS:-}" if spec.gpus == "job" else ("" if spec.gpus == "none" else spec.gpus)
    lines = ["gpus=()"]
    if spec.gpus != "none":
        lines.append(f'ids="{ids}"' if spec.gpus == "job" else f"ids={shlex.quote(ids)}")
        if spec.runtime == "docker":
            # the quotes are part of the value: docker reads --gpus as CSV, so "device=0,1" must be quoted
            lines.append('[ -z "$ids" ] || gpus=(--gpus "\\"device=$ids\\"")')
        else:  # podman: CDI device names (`nvidia-ctk cdi generate`), one per GPU
            lines.append('for g in ${ids//,/ }; do gpus+=(--device "nvidia.com/gpu=$g"); done')
    patterns = "|".join(FORWARDED)
    lines.append(f'envs=(); for n in $(compgen -e); do case $n in {patterns}) envs+=(-e "$n");; esac; done')
    mounts = " ".join(f"-v {shlex.quote(f'{m}:{m}')}" for m in spec.mounts)
    ran_in = f"-e {RAN_IN[0]}={spec.runtime} -e {shlex.quote(f'{RAN_IN[1]}={spec.image}')}"
    lines.append(
        f"exec {spec.runtime} run --rm --init --ipc=host --network host -w {shlex.quote(spec.workdir)} "
        f'{mounts} {ran_in} "${{envs[@]}}" "${{gpus[@]}}" {shlex.quote(str(spec.image))} {shlex.quote(program)} "$@"'
    )
    return "; ".join(lines)


def apptainer_script(spec: ContainerSpec, program: str) -> str:
    """apptainer: a one-line bash script run by each srun task, which hands the task's own values of
    ``APPTAINER_PASSED`` (its SLURM_PROCID, ...) to ``apptainer exec --cleanenv`` as
    ``APPTAINERENV_*`` variables: in the environment, never on a command line or in a file.

    --nv (GPU jobs only) maps the node's driver and GPUs. Apptainer forwards srun's signals (USR2:
    requeue) to the program and shares the host's /dev/shm and network; `exec` makes it the task.
    """
    passed = "|".join(APPTAINER_PASSED)
    withheld = "|".join(APPTAINER_WITHHELD)
    nv = "" if spec.gpus == "none" else "--nv "
    return (
        f"for n in $(compgen -e); do case $n in {withheld}) ;; {passed}) "
        'export "APPTAINERENV_$n=${!n}";; esac; done; '
        f"exec apptainer exec --cleanenv {nv}--bind {shlex.quote(','.join(spec.mounts))} "
        f'--pwd {shlex.quote(spec.workdir)} {shlex.quote(str(spec.image))} {shlex.quote(program)} "$@"'
    )
