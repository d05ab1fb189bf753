"""Cluster profiles: where and how a study's jobs run (``slurm/profiles/<name>.toml``).

A profile says what a cluster needs (partition, account, GPUs per node, time, container runtime,
...). ``[models.<model>]`` tables override resources per model (ResNet-34 may need more time), and
runs with different resources go to different job arrays. CLI flags override profile values.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifar_hpc.errors import UserError

RUNTIMES = ("none", "apptainer", "docker", "podman", "pyxis")
DEFAULT_PROFILE = "local"


@dataclass(frozen=True, kw_only=True)
class Resources:
    """What one array task asks Slurm for."""

    nodes: int = 1
    gpus_per_node: int = 1
    """GPUs per node; training runs one process (Slurm task) per GPU. 0: CPU only, one task per node."""
    cpus_per_task: int = 8
    mem_gb: float | None = None
    """Memory per node in GB; None: the cluster's default."""
    time_min: int = 120

    def __post_init__(self) -> None:
        for name in ("nodes", "cpus_per_task", "time_min"):
            if getattr(self, name) < 1:
                raise UserError(f"profile: {name} must be >= 1, got {getattr(self, name)}")
        if self.gpus_per_node < 0:
            raise UserError(f"profile: gpus_per_node must be >= 0, got {self.gpus_per_node}")
        if self.mem_gb is not None and self.mem_gb <= 0:
            raise UserError(f"profile: mem_gb must be > 0, got {self.mem_gb}")

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
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    resources: Resources = field(default_factory=Resources)
    models: dict[str, Resources] = field(default_factory=dict)
    """Per-model resources, overriding ``resources`` (e.g. more time for resnet34)."""
    array_parallelism: int = 64
    """How many tasks of one array may run at once (``--array=0-N%P``)."""
    max_array_size: int | None = None
    """Cap on tasks per array; None: the cluster's MaxArraySize (read from ``scontrol show config``)."""
    signal_delay_s: int = 90
    """USR2 is sent this long before the time limit: time to write a checkpoint and requeue."""
    runtime: str = "none"
    image: str | None = None
    binds: tuple[str, ...] = ()
    scratch: str | None = None
    """Node-local scratch for the dataset (exported as TMPDIR when set)."""
    extra_sbatch: dict[str, Any] = field(default_factory=dict)
    """Any other ``#SBATCH --key=value`` lines."""
    setup: tuple[str, ...] = ()
    """Shell lines run before training in each job (module loads, conda activate, ...)."""

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise UserError(f"profile {self.name}: unknown container runtime {self.runtime!r}; valid: {', '.join(RUNTIMES)}")
        if self.runtime != "none" and not self.image:
            raise UserError(f"profile {self.name}: runtime {self.runtime} needs an image")
        if self.array_parallelism < 1:
            raise UserError(f"profile {self.name}: array_parallelism must be >= 1")
        if self.max_array_size is not None and self.max_array_size < 1:
            raise UserError(f"profile {self.name}: max_array_size must be >= 1")

    def resources_for(self, model: str) -> Resources:
        return self.models.get(model, self.resources)


def profile_dirs() -> list[Path]:
    return [Path("slurm") / "profiles", Path(__file__).resolve().parent.parent / "slurm" / "profiles"]


def load_profile(name_or_path: str = DEFAULT_PROFILE, overrides: dict[str, Any] | None = None) -> Profile:
    """A profile by name (slurm/profiles/NAME.toml) or path, with CLI ``overrides`` applied."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = next((d / f"{name_or_path}.toml" for d in profile_dirs() if (d / f"{name_or_path}.toml").is_file()), path)
    if not path.is_file():
        known = sorted({p.stem for d in profile_dirs() if d.is_dir() for p in d.glob("*.toml")})
        raise UserError(f"unknown profile {name_or_path!r}; known: {', '.join(known) or 'none'} (or a path to a .toml file)")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"profile {path} is not valid TOML: {error}") from None
    return parse_profile(raw, name=path.stem, overrides=overrides)


def parse_profile(raw: dict[str, Any], *, name: str, overrides: dict[str, Any] | None = None) -> Profile:
    raw = {**raw, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    resource_keys = {f.name for f in dataclasses.fields(Resources)}
    profile_keys = {f.name for f in dataclasses.fields(Profile)} - {"name", "resources"}
    unknown = sorted(set(raw) - resource_keys - profile_keys)
    if unknown:
        raise UserError(f"profile {name}: unknown key {unknown[0]!r}; valid: {', '.join(sorted(resource_keys | profile_keys))}")
    base = {k: v for k, v in raw.items() if k in resource_keys}
    resources = Resources(**base)
    models = {}
    for model, table in raw.get("models", {}).items():
        if not isinstance(table, dict) or set(table) - resource_keys:
            raise UserError(f"profile {name}: [models.{model}] may only set {', '.join(sorted(resource_keys))}")
        models[model] = Resources(**{**base, **table})
    rest = {k: v for k, v in raw.items() if k in profile_keys and k != "models"}
    for key in ("binds", "setup"):
        if key in rest:
            rest[key] = tuple(rest[key])
    try:
        return Profile(name=name, resources=resources, models=models, **rest)
    except TypeError as error:
        raise UserError(f"profile {name}: {error}") from None
