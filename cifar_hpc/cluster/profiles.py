"""Cluster profiles: where and how a study's jobs run (``slurm/profiles/<name>.toml``).

A profile says what a cluster needs (partition, account, GPUs per node, time, container runtime,
...). ``[models.<model>]`` tables override resources per model (ResNet-34 may need more time), and
runs with different resources go to different job arrays. CLI flags override profile values.

Time limits are checked here, before anything is submitted (``check_time_limit``): every attempt of
a run (the first, and each after a requeue) gets ``time_min`` minutes, of which start-up, the
requeue signal's lead time and Slurm's signal jitter are lost; what is left must hold some training,
or the run is requeued again and again with no epoch done (``--time-min 1``: 4 attempts, 0 epochs).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cifar_hpc
from cifar_hpc.base.errors import UserError
from cifar_hpc.cluster.containers import RUNTIMES, Runtime
from cifar_hpc.config.settings import find_file, from_dict, merge, read_toml
from cifar_hpc.config.train_config import MODELS, Model

DEFAULT_PROFILE = "test-cluster"
"""The local Slurm test cluster (``slurm/start-local-cluster.sh``), not the local executor."""
RENAMED = {"local": DEFAULT_PROFILE}
"""Old profile names that still load, with a one-line note (scripts written with ``--profile local``)."""

_SBATCH_KEY = re.compile(r"^[a-z][a-z0-9_-]*$")
"""An sbatch long option name (submitit writes ``#SBATCH --key=value``, with ``_`` as ``-``)."""
_UNSAFE = re.compile(r"[\s'\"`\\]")
"""Whitespace (newlines above all), quotes and backslashes would end or split an ``#SBATCH`` line."""
_RESERVED = {
    "partition": "partition",
    "account": "account",
    "qos": "qos",
    "constraint": "constraint",
    "nodes": "nodes",
    "gpus-per-node": "gpus_per_node",
    "cpus-per-task": "cpus_per_task",
    "mem": "mem_gb",
    "time": "time_min",
    "signal": "signal_delay_s",
    "array": "array_parallelism",
    # the task layout: DDP under srun needs one task per GPU on every node, or it waits for ranks that never come
    **dict.fromkeys(
        ("ntasks", "ntasks-per-node", "tasks-per-node", "ntasks-per-gpu", "gpus", "gpus-per-task", "gres"),
        "gpus_per_node and nodes (one srun task per GPU)",
    ),
}
"""sbatch options a profile key already sets: an ``extra_sbatch`` copy would silently win over it."""

SbatchValue = bool | int | float | str  # tried in this order: 10 stays a number

# ---- The time-limit rules (check_time_limit) ----------------------------------------------------
STARTUP_ALLOWANCE_S = 120
"""Seconds an attempt may spend before it trains: a container start, Python, torch and Lightning
imports, staging the data to scratch, loading the last checkpoint (tens of seconds each on a busy
shared filesystem)."""
MIN_TRAINING_S = 180
"""Seconds of training each attempt must have at least (a few ResNet epochs on one GPU): a limit
that leaves less makes a run that needs many attempts, each spending most of its time starting."""
SIGNAL_EARLY_S = 60
"""Slurm may send ``--signal`` up to 60 s before the time asked (sbatch(1): "due to the resolution
of event handling"); measured here: USR2@30 on a 1-minute job came 42 s before the limit."""
SUBMITIT_LATE_WINDOW_S = 600
"""submitit 1.5's rule (``SignalHandler.has_timed_out`` in submitit/core/job_environment.py): a USR2
counts as a *timeout* when the attempt has run at least ``min(0.8 * limit, limit - 600 s)``, else as
a *preemption*. Preemptions requeue without limit; timeouts only ``max_num_timeout`` times (our
``max_timeouts``). So with ``time_min`` <= 10 every preemption counts as a timeout, and under 50
minutes any preemption in an attempt's last 10 minutes does; and a USR2 sent more than
``max(600 s, 20 % of the limit)`` before the limit would be taken for a preemption, so a run that
never fits would be requeued forever."""
TIMED_OUT_TOO_OFTEN = "timed-out too many times"
"""What submitit says (log line "Job not requeued because: ...", and the ``UncompletedJobError`` that
train.run records as the run's error) when a run used up its ``max_timeouts``; the Slurm job then
ends FAILED with exit code 1, not TIMEOUT."""


@dataclass(frozen=True, kw_only=True)
class Resources:
    """What one array task asks Slurm for."""

    nodes: int = 1
    """Nodes per run (DDP across nodes when > 1)."""
    gpus_per_node: int = 1
    """GPUs per node; training runs one process (Slurm task) per GPU. 0: CPU only, one task per node."""
    cpus_per_task: int = 8
    """CPUs per task (DataLoader workers come from these)."""
    mem_gb: float | None = None
    """Memory per node in GB; None: the cluster's default."""
    time_min: int = 120
    """Time limit per attempt in minutes (a requeued run gets it again); at least 8 with the default
    ``signal_delay_s`` (``check_time_limit``)."""

    def __post_init__(self) -> None:
        for name in ("nodes", "cpus_per_task", "time_min", "gpus_per_node"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):  # 1.5 must not become 1 on the way to sbatch
                raise UserError(f"{name} must be a whole number, got {value!r}")
        for name in ("nodes", "cpus_per_task", "time_min"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.gpus_per_node < 0:
            raise UserError(f"gpus_per_node must be >= 0, got {self.gpus_per_node}")
        if self.mem_gb is not None and self.mem_gb <= 0:
            raise UserError(f"mem_gb must be > 0, got {self.mem_gb}")

    @property
    def tasks_per_node(self) -> int:
        """DDP under Slurm: one task per GPU, or one per node on CPU."""
        return max(1, self.gpus_per_node)

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


@dataclass(frozen=True, kw_only=True)
class Profile:
    name: str = DEFAULT_PROFILE
    """The profile's name (its file name without ``.toml``)."""
    partition: str | None = None
    """Slurm partition; None: the cluster's default."""
    account: str | None = None
    """Slurm account to charge."""
    qos: str | None = None
    """Slurm quality of service."""
    constraint: str | None = None
    """Slurm node features, e.g. ``a100|h100``."""
    resources: Resources = field(default_factory=Resources)
    """What each run asks for (in the file: the top-level ``nodes``, ``gpus_per_node``, ... keys)."""
    models: dict[Model, Resources] = field(default_factory=dict)
    """Per-model resources, overriding ``resources`` (e.g. more time for resnet34)."""
    array_parallelism: int = 64
    """How many tasks of one array may run at once (``--array=0-N%P``)."""
    max_array_size: int | None = None
    """Cap on tasks per array; None: the cluster's MaxArraySize (read from ``scontrol show config``)."""
    signal_delay_s: int = 90
    """USR2 is sent this long before the time limit: time to write a checkpoint and requeue. At most
    ``max(600, 12 * time_min)`` - 60 (submitit takes an earlier USR2 for a preemption)."""
    max_timeouts: int = 3
    """How many times a run may be requeued after reaching its time limit (submitit's
    ``max_num_timeout``): a run gets at most ``max_timeouts + 1`` attempts of ``time_min`` each, plus
    those a preemption gives. submitit counts a preemption in an attempt's last 10 minutes (with
    ``time_min`` <= 10: every preemption) as a timeout too; raise this for short limits."""
    runs_per_task: int = 1
    """Runs each array task trains one after another in one set of processes (``--pack N``): start-up
    (scheduling, container, imports, data, process group) is paid once per task. The time limit is
    the task's: it must hold them all."""
    runtime: Runtime = "none"
    """Container runtime each task runs in: ``none``, ``apptainer``, ``docker``, ``podman`` or ``pyxis``."""
    image: str | None = None
    """Container image (a .sif path or an image reference); needed unless runtime is ``none``."""
    binds: tuple[str, ...] = ()
    """Host folders made visible inside the container (the working folder always is)."""
    scratch: str | None = None
    """Node-local scratch for the dataset (exported as TMPDIR when set)."""
    extra_sbatch: dict[str, SbatchValue] = field(default_factory=dict)
    """Any other ``#SBATCH --key=value`` lines (``true``: a bare ``--key`` flag)."""
    setup: tuple[str, ...] = ()
    """Shell lines run before training in each job (module loads, conda activate, ...)."""
    code_snapshot: bool = True
    """Bare metal (runtime ``none``): each submission copies the package into the study folder and its
    jobs import that copy (``cifar_hpc.study.code_snapshot``), so that editing the checkout never
    changes a queued run; ``false`` imports whatever the checkout holds when each task starts. A
    container's image freezes the code itself: no copy is made there."""

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise UserError(f"unknown container runtime {self.runtime!r}; valid: {', '.join(RUNTIMES)}")
        if self.runtime != "none" and not self.image:
            raise UserError(f"runtime {self.runtime} needs an image")
        if self.array_parallelism < 1:
            raise UserError("array_parallelism must be >= 1")
        if self.max_array_size is not None and self.max_array_size < 1:
            raise UserError("max_array_size must be >= 1")
        if not isinstance(self.runs_per_task, int) or isinstance(self.runs_per_task, bool) or self.runs_per_task < 1:
            raise UserError(f"runs_per_task must be a whole number >= 1, got {self.runs_per_task!r}")
        if self.signal_delay_s < 0:
            raise UserError(f"signal_delay_s must be >= 0, got {self.signal_delay_s}")
        if not isinstance(self.max_timeouts, int) or isinstance(self.max_timeouts, bool) or self.max_timeouts < 0:
            raise UserError(f"max_timeouts must be a whole number >= 0, got {self.max_timeouts!r}")
        for model in self.models:
            if model not in MODELS:
                raise UserError(f"unknown model {model!r} in [models]; valid: {', '.join(MODELS)}")
        check_time_limit(self.resources.time_min, self.signal_delay_s)
        for model, res in self.models.items():
            check_time_limit(res.time_min, self.signal_delay_s, f"models.{model}.")
        for what in ("partition", "account", "qos", "constraint", "image", "scratch"):
            _check_safe(what, getattr(self, what))
        for bind in self.binds:
            _check_safe("binds entry", bind, also=",")  # joined with commas on the command line
        for key, value in self.extra_sbatch.items():
            if not isinstance(key, str) or not _SBATCH_KEY.match(key):
                raise UserError(
                    f"extra_sbatch key {key!r} is not an sbatch option name (lower-case letters, digits, - and _)"
                )
            if key.replace("_", "-") in _RESERVED:
                raise UserError(
                    f"extra_sbatch key {key!r} is set by cifar-hpc: use the profile's {_RESERVED[key.replace('_', '-')]}"
                )
            if value is False:
                raise UserError(f"extra_sbatch.{key} = false writes nothing sensible: leave the key out")
            _check_safe(f"extra_sbatch.{key}", str(value))

    def resources_for(self, model: str) -> Resources:
        return self.models.get(model, self.resources)  # type: ignore[call-overload]


def min_time_min(signal_delay_s: int) -> int:
    """The shortest time limit (minutes) an attempt can train in, given the requeue signal's lead time."""
    need_s = signal_delay_s + SIGNAL_EARLY_S + STARTUP_ALLOWANCE_S + MIN_TRAINING_S
    return -(-need_s // 60)  # rounded up to Slurm's whole minutes


def check_time_limit(time_min: int, signal_delay_s: int, where: str = "") -> None:
    """``UserError`` for a limit no attempt can train in, or one whose USR2 submitit would miscount.

    1. ``time_min * 60 >= signal_delay_s + SIGNAL_EARLY_S + STARTUP_ALLOWANCE_S + MIN_TRAINING_S``
       (90 + 60 + 120 + 180 = 450 s with the default signal: ``time_min`` >= 8).
    2. ``signal_delay_s + SIGNAL_EARLY_S <= max(SUBMITIT_LATE_WINDOW_S, 0.2 * time_min * 60)``, so
       that submitit counts the time limit's USR2 as a timeout and ``max_timeouts`` bounds a run.
    """
    need = min_time_min(signal_delay_s)
    if time_min < need:
        raise UserError(
            f"{where}time_min {time_min} is too short: each attempt needs signal_delay_s {signal_delay_s} s "
            f"+ up to {SIGNAL_EARLY_S} s of Slurm signal jitter + {STARTUP_ALLOWANCE_S} s start-up "
            f"+ {MIN_TRAINING_S} s of training; use time_min >= {need}"
        )
    window_s = max(SUBMITIT_LATE_WINDOW_S, time_min * 60 // 5)
    if signal_delay_s + SIGNAL_EARLY_S > window_s:
        raise UserError(
            f"signal_delay_s {signal_delay_s} is too long for {where}time_min {time_min}: submitit takes a USR2 "
            f"sent more than {window_s} s before the limit for a preemption and would requeue the run without "
            f"end; use signal_delay_s <= {window_s - SIGNAL_EARLY_S}"
        )


def out_of_time_note(attempts: int | None, max_timeouts: int | None = None) -> str:
    """The reason shown for a run that ran out of attempts (submitit's "timed-out too many times", or a
    Slurm job that ended TIMEOUT). ``attempts``: how many attempts ran (``requeues + 1``)."""
    after = f" after {attempts} attempts" if attempts else ""
    allowed = (
        f" (max_timeouts {max_timeouts}: at most {max_timeouts + 1} time slices)" if max_timeouts is not None else ""
    )
    return f"time limit reached{after}{allowed}; raise time_min or max_timeouts in the profile"


def _check_safe(what: str, value: str | None, also: str = "") -> None:
    if value is None:
        return
    if not value or _UNSAFE.search(value) or any(char in value for char in also):
        extra = f", or {also!r}" if also else ""
        raise UserError(f"{what} {value!r} may not be empty or contain whitespace, quotes or backslashes{extra}")


def profile_dirs() -> list[Path]:
    """Where profile names are looked up: ./slurm/profiles first, then the one shipped beside the package."""
    return [Path("slurm") / "profiles", Path(cifar_hpc.__file__).resolve().parent.parent / "slurm" / "profiles"]


def load_profile(
    name_or_path: str = DEFAULT_PROFILE,
    overrides: dict[str, Any] | None = None,
    *,
    note: Callable[[str], None] = lambda line: None,
) -> Profile:
    """A profile by name (slurm/profiles/NAME.toml) or path, with CLI ``overrides`` applied; an old
    name (``RENAMED``) loads its new one, with a line to ``note``, unless a file of that name exists."""
    try:
        path = find_file(name_or_path, profile_dirs(), "profile")
    except UserError:
        if name_or_path not in RENAMED:
            raise
        new = RENAMED[name_or_path]
        note(
            f"note: profile {name_or_path!r} is now called {new!r} (the local Slurm test cluster); use --profile {new}"
        )
        path = find_file(new, profile_dirs(), "profile")
    return parse_profile(read_toml(path, "profile"), name=path.stem, overrides=overrides)


_RESOURCE_KEYS = {f.name for f in dataclasses.fields(Resources)}
_PROFILE_KEYS = {f.name for f in dataclasses.fields(Profile)} - {"name", "resources"}


def parse_profile(raw: dict[str, Any], *, name: str, overrides: dict[str, Any] | None = None) -> Profile:
    """A profile from its file's tables: the top-level resource keys are the base that
    ``[models.<model>]`` tables override. Every mistake is one line starting ``profile NAME:``."""
    try:
        raw = {**raw, **{k: v for k, v in (overrides or {}).items() if v is not None}}
        for key in ("models", "extra_sbatch"):
            if key in raw and not isinstance(raw[key], dict):
                raise UserError(f"{key} must be a table, got {raw[key]!r}")
        valid = _RESOURCE_KEYS | _PROFILE_KEYS
        unknown = sorted(set(raw) - valid)
        if unknown:
            raise UserError(f"unknown setting {unknown[0]}; valid: {', '.join(sorted(valid))}")
        base = {k: v for k, v in raw.items() if k in _RESOURCE_KEYS}
        settings: dict[str, Any] = {k: v for k, v in raw.items() if k in _PROFILE_KEYS}
        settings["resources"] = from_dict(Resources, base)
        models = {}
        for model, table in raw.get("models", {}).items():
            if not isinstance(table, dict):
                raise UserError(
                    f"[models.{model}] must be a table of {', '.join(sorted(_RESOURCE_KEYS))}, got {table!r}"
                )
            models[model] = from_dict(Resources, merge(base, table), f"models.{model}.")
        settings["models"] = models
        return from_dict(Profile, {**settings, "name": name})
    except UserError as error:
        raise UserError(f"profile {name}: {error}") from None
