"""The one generator of container commands: how a program starts inside apptainer, docker, podman or pyxis.

Both ways of running a job use it: ``cifar-hpc submit`` (``executors.container_python``: submitit's
``python3``) and ``slurm/train.sbatch`` (``cifar-hpc container-prefix``: ``cifar-hpc``). A
``ContainerSpec`` says what to run where; ``container_command`` returns the argv words to put
between ``srun``'s own options and the program's arguments, split into extra srun options (pyxis)
and the prefix that starts the program. Pure functions, no environment read here: per-task values
(``SLURM_PROCID``, ``SLURM_JOB_GPUS``, ...) are read by the generated command when each srun task
starts, never at generation time.

Secrets: environment variables reach docker/podman by NAME only (``-e NAME``); the runtime copies
each value from the task's own environment, so the W&B key never lands in a file, a script or a
command line. Apptainer and pyxis pass the task's environment through themselves.
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

_GPU_IDS = re.compile(r"[A-Za-z0-9_-]+(,[A-Za-z0-9_-]+)*")  # "0,1" or GPU UUIDs: nothing a shell interprets


@dataclass(frozen=True, kw_only=True)
class ContainerSpec:
    """What to run where: one container set-up, shared by every task of a job."""

    runtime: Runtime = "none"
    """``none`` runs the program from the host's PATH; the others wrap it in their container."""
    image: str | None = None
    """A .sif file or ``docker://`` URI (apptainer), an image name (docker, podman), an enroot URI
    such as ``registry#group/image:tag`` (pyxis)."""
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
        # --nv maps the host's driver and the job's GPUs (CUDA_VISIBLE_DEVICES passes through with the
        # rest of the environment: SLURM_*, WANDB_API_KEY arrive without being written anywhere)
        nv = () if spec.gpus == "none" else ("--nv",)
        return ContainerCommand(
            (),
            (
                "apptainer",
                "exec",
                *nv,
                "--bind",
                ",".join(spec.mounts),
                "--pwd",
                spec.workdir,
                str(spec.image),
                program,
            ),
        )
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
    lines.append(
        f"exec {spec.runtime} run --rm --init --ipc=host --network host -w {shlex.quote(spec.workdir)} "
        f'{mounts} "${{envs[@]}}" "${{gpus[@]}}" {shlex.quote(str(spec.image))} {shlex.quote(program)} "$@"'
    )
    return "; ".join(lines)
