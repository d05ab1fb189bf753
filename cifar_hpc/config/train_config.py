"""Typed configuration of one training run.

Every section is a frozen, keyword-only dataclass validated in ``__post_init__``, so a bad value is
refused where it is made (CLI flag, grid file, config file) before anything is written. A run's
identity (``run_id``, ``cifar_hpc.config.identity``) is a short hash of the fields that change what is
learnt; paths, logging and device counts are left out so that a requeued run on another node resumes
as the same run.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from cifar_hpc.base.errors import UserError
from cifar_hpc.config.identity import _identity_of, run_id
from cifar_hpc.config.identity import setting_of as setting_of  # re-exported
from cifar_hpc.config.settings import from_dict

# The choices are the Literal types; the tuples are derived from them for messages and other modules.
Model = Literal["resnet18", "resnet34"]
Optimizer = Literal["sgd", "adam"]
Schedule = Literal["onecycle", "cosine", "constant"]
Precision = Literal["auto", "32-true", "16-mixed", "bf16-mixed"]
Loader = Literal["torchvision", "device"]
WandbMode = Literal["auto", "online", "offline", "disabled"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune"]
MODELS: tuple[str, ...] = get_args(Model)
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
PRECISIONS: tuple[str, ...] = get_args(Precision)
LOADERS: tuple[str, ...] = get_args(Loader)
WANDB_MODES: tuple[str, ...] = get_args(WandbMode)
COMPILE_MODES: tuple[str, ...] = get_args(CompileMode)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
"""Lightning's accelerators this recipe runs on (``cifar_hpc.training.devices.resolve_device_settings``)."""
MAX_SEED = 2**32 - 1
"""numpy's seeds are 0 .. 2**32 - 1; Lightning's ``seed_everything`` silently turns any other into 0."""


def _choice(what: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise UserError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")


def _positive(what: str, value: float) -> None:
    if not value > 0:
        raise UserError(f"{what} must be > 0, got {value}")


def check_batch_split(batch_size: int, world_size: int, how: str = "") -> None:
    """The global batch is split evenly over all processes: refuse one that the world size does not
    divide (``how`` says where the world size comes from, for the message)."""
    if batch_size % world_size:
        raise UserError(f"batch size {batch_size} is not divisible by the world size {world_size}{how}")


def names_device_ids(devices: str) -> bool:
    """True when ``devices`` lists device indices (``0,1``, ``[0, 1]``, ``0,``) rather than a count."""
    text = devices.strip()
    return "," in text or text.startswith("[")


def check_devices_on_cpu(devices: str) -> None:
    """Refuse GPU indices for a run on CPU, where Lightning takes ``devices`` as a process count only
    (it raises a TypeError for a list)."""
    if names_device_ids(devices):
        raise UserError(
            f"devices {devices!r} lists GPU indices, but this run is on CPU: give a process count instead "
            "(e.g. --devices 2) or 'auto'"
        )


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    name: Optimizer = "sgd"
    """Optimizer: ``sgd`` (Nesterov momentum) or ``adam`` (AdamW-style decoupled decay is not used: plain Adam)."""
    lr: float = 0.05
    """Peak learning rate (the LR finder, when on, replaces it)."""
    weight_decay: float = 5e-4
    """L2 penalty passed to the optimizer."""
    momentum: float = 0.9
    """SGD momentum; for Adam it is beta1."""
    schedule: Schedule = "onecycle"
    """Per-step LR schedule: ``onecycle`` (warm-up then cosine anneal), ``cosine``, or ``constant``."""

    def __post_init__(self) -> None:
        _choice("optimizer", self.name, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _positive("learning rate", self.lr)
        if self.weight_decay < 0:
            raise UserError(f"weight decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.momentum < 1:
            raise UserError(f"momentum must be in [0, 1), got {self.momentum}")


@dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    crop: bool = True
    """Random 32×32 crop of the image zero-padded by ``crop_padding`` pixels."""
    crop_padding: int = 4
    """Zero padding in pixels on each side before the random crop (0 to 16)."""
    flip: bool = True
    """Random horizontal flip (p = 0.5)."""
    rotate: bool = False
    """Random rotation by an angle uniform in ±``rotate_degrees`` (zero fill)."""
    rotate_degrees: float = 15.0
    """Largest rotation angle in degrees (0 to 180)."""
    normalize: bool = True
    """Subtract CIFAR-10's channel means and divide by its standard deviations."""

    def __post_init__(self) -> None:
        if self.crop_padding < 0 or self.crop_padding > 16:
            raise UserError(f"crop padding must be in [0, 16], got {self.crop_padding}")
        if not 0 <= self.rotate_degrees <= 180:
            raise UserError(f"rotation degrees must be in [0, 180], got {self.rotate_degrees}")


@dataclass(frozen=True, kw_only=True)
class TrickConfig:
    lr_find: bool = False
    """Run Lightning's LR finder before training and use its steepest-descent pick as the peak LR."""
    swa: bool = False
    """Stochastic weight averaging over the last ``1 - swa_epoch_start`` of the epochs."""
    swa_lrs: float | None = None
    """Absolute learning rate SWA anneals to and holds while averaging; None: ``swa_lr_factor`` x the
    peak LR. Set, it wins over the factor (and is the LR whatever the peak or the LR finder says)."""
    swa_lr_factor: float = 0.2
    """SWA's LR as a fraction of the peak LR (``optim.lr``, or the LR finder's pick): 0.2 is 0.01 at
    the default peak 0.05. Relative, so that a smaller peak never makes ``+swa`` raise the LR late
    in training (a row would measure "SWA plus a higher LR")."""
    swa_epoch_start: float = 0.75
    """Fraction of the epochs after which SWA starts (Lightning's float form)."""
    accumulate: tuple[tuple[int, int], ...] = field(default=(), metadata={"parse": lambda v: _accumulation_pairs(v)})
    """Gradient accumulation schedule as epoch:factor pairs, e.g. ``0:1,4:2`` (factor 2 from epoch 4;
    in files also ``[[0, 1], [4, 2]]`` or ``{0 = 1, 4 = 2}``); empty = off."""
    clip: bool = False
    """Clip gradients by norm at ``clip_value``."""
    clip_value: float = 0.5
    """Largest gradient norm when ``clip`` is on."""
    early_stop: bool = False
    """Stop when ``val_acc`` has not improved for ``early_stop_patience`` epochs."""
    early_stop_patience: int = 5
    """Epochs without a better ``val_acc`` before early stopping ends the run."""

    def __post_init__(self) -> None:
        if self.swa_lrs is not None:
            _positive("swa_lrs", self.swa_lrs)
        _positive("swa_lr_factor", self.swa_lr_factor)
        if not 0 < self.swa_epoch_start < 1:
            raise UserError(f"swa_epoch_start must be a fraction in (0, 1), got {self.swa_epoch_start}")
        _positive("clip value", self.clip_value)
        _positive("early-stop patience", self.early_stop_patience)
        object.__setattr__(self, "accumulate", _accumulation_pairs(self.accumulate))
        epochs = [epoch for epoch, _ in self.accumulate]
        if epochs and epochs[0] != 0:
            # Lightning's scheduler starts at factor 1 before the first key; say it explicitly instead.
            raise UserError("accumulation schedule must start at epoch 0, e.g. 0:1,4:2")

    @property
    def accumulation(self) -> dict[int, int]:
        return dict(self.accumulate)


def _accumulation_pairs(value: Any) -> tuple[tuple[int, int], ...]:
    """Normalise a schedule given as "0:1,4:2", {0: 1, 4: 2} or [[0, 1], [4, 2]] to sorted pairs."""
    if isinstance(value, str):
        value = [item.split(":") for item in value.split(",") if item.strip()] if value.strip() else []
    if isinstance(value, dict):
        value = list(value.items())
    try:
        pairs = tuple(sorted((int(epoch), int(factor)) for epoch, factor in value))
    except (TypeError, ValueError):
        raise UserError(f"accumulation schedule must look like 0:1,4:2 (epoch:factor), got {value!r}") from None
    for epoch, factor in pairs:
        if epoch < 0 or factor < 1:
            raise UserError(f"accumulation schedule needs epoch >= 0 and factor >= 1, got {epoch}:{factor}")
    if len({epoch for epoch, _ in pairs}) != len(pairs):
        raise UserError("accumulation schedule names an epoch twice")
    return pairs


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    dir: str = "data"
    """Folder holding ``cifar-10-batches-py/`` (real or generated), or that folder itself."""
    loader: Loader = "torchvision"
    """``torchvision``: DataLoader with per-image transforms in workers. ``device``: the whole uint8
    dataset lives on the training device and whole batches are augmented with tensor ops."""
    val_fraction: float = 0.1
    """Share of the training set held out for validation (split fixed by the run's seed)."""
    num_workers: int | None = None
    """DataLoader workers per process; None = one per CPU the process may use, at most 8."""
    stage: bool = True
    """Copy the dataset to node-local scratch ($SLURM_TMPDIR, then $TMPDIR) before loading."""
    fingerprint: str | None = None
    """The data's kind and content hash (``cifar_hpc.data.fingerprint``), part of the run id; filled in
    from ``dir`` by ``submit`` and ``train``, and checked against the data a run finds."""

    def __post_init__(self) -> None:
        _choice("loader", self.loader, LOADERS)
        if not 0 < self.val_fraction < 1:
            raise UserError(f"validation fraction must be in (0, 1), got {self.val_fraction}")
        if self.num_workers is not None and self.num_workers < 0:
            raise UserError(f"num_workers must be >= 0, got {self.num_workers}")


@dataclass(frozen=True, kw_only=True)
class WandbConfig:
    project: str = "cifar-hpc"
    """W&B project the run is logged to."""
    group: str | None = None
    """W&B group; a study's grid name when submitted by ``cifar-hpc submit``."""
    job_type: str = "train"
    """W&B job type."""
    tags: tuple[str, ...] = ()
    """W&B tags, e.g. ``["baseline", "r18"]``."""
    mode: WandbMode = "auto"
    """``auto``: online only when an API key is configured and W&B answers a short probe, else
    offline (compute nodes rarely have a network; ``wandb sync`` uploads later). ``disabled`` writes nothing."""

    def __post_init__(self) -> None:
        _choice("W&B mode", self.mode, WANDB_MODES)
        object.__setattr__(self, "tags", tuple(self.tags))


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    model: Model = "resnet18"
    """torchvision ResNet with the CIFAR stem: ``resnet18`` or ``resnet34``."""
    seed: int = 0
    """Seeds weights, data order, augmentation and the validation split (0 to 2**32 - 1)."""
    epochs: int = 10
    """Training epochs (an early stop may end the run sooner)."""
    batch_size: int = 256
    """Global batch per forward pass, split evenly over all processes. With accumulation, an
    optimizer step sees ``batch_size × factor`` images."""
    precision: Precision = "auto"
    """``auto``: bf16-mixed on a GPU that supports it, 32-true on CPU."""
    channels_last: bool | None = None
    """Memory format for convolutions; None = on for GPUs, off for CPU."""
    compile: bool = False
    """Compile the network with ``torch.compile`` (Inductor; the LightningModule around it stays eager)."""
    compile_mode: CompileMode = "default"
    """``torch.compile``'s mode: ``default``, ``reduce-overhead`` (CUDA graphs: no launch overhead per
    kernel, GPU only) or ``max-autotune`` (longer compile, tuned kernels). Not part of the run id: the
    same computation, other kernels. ``default`` until ``make gpu-check`` has measured the others."""
    checkpoint_every_s: float = 120.0
    """``last.ckpt`` at most this often (checked at each epoch's end), and always at the end of fit and
    on Ctrl-C (at the next step boundary): a run killed outright loses at most max(1 epoch, this) of
    training. The best-val_acc weights are kept in memory and written with it."""
    accelerator: str = "auto"
    """Lightning's ``accelerator``: ``auto``, ``cpu``, ``gpu`` (or ``cuda``)."""
    devices: str = "auto"
    """Lightning's ``devices``: ``auto``, a count (on CPU: processes), or GPU indices such as ``0,1`` (GPU only)."""
    num_nodes: int = 1
    """Nodes the run spans (DDP); processes = devices x nodes."""
    out_dir: str | None = None
    """Where the run writes; None = ``runs/<run_id>``."""
    grid: str | None = None
    """Label: the grid (study) this run belongs to, set by ``cifar-hpc submit``."""
    cell: str | None = None
    """Label: the grid cell (model × trick setting, seeds aside), e.g. ``baseline`` or ``+swa``."""
    telemetry_interval_s: float = 1.0
    """Seconds between NVML samples of every GPU the job uses."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and learning-rate schedule."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Training-set augmentation."""
    tricks: TrickConfig = field(default_factory=TrickConfig)
    """Lightning training tricks (all off by default)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Where the data is and how it is loaded."""
    wandb: WandbConfig = field(default_factory=WandbConfig)
    """Weights & Biases logging."""

    def __post_init__(self) -> None:
        _choice("model", self.model, MODELS)
        _choice("precision", self.precision, PRECISIONS)
        _choice("accelerator", self.accelerator, ACCELERATORS)
        if not 0 <= self.seed <= MAX_SEED:  # else two "seeds" could be one run (both 0)
            raise UserError(f"seed must be in 0..{MAX_SEED}, got {self.seed}")
        _positive("epochs", self.epochs)
        _positive("batch size", self.batch_size)
        _positive("num_nodes", self.num_nodes)
        _positive("telemetry interval", self.telemetry_interval_s)
        _choice("compile mode", self.compile_mode, COMPILE_MODES)
        if self.checkpoint_every_s < 0:
            raise UserError(f"checkpoint_every_s must be >= 0 (0: every epoch), got {self.checkpoint_every_s}")
        object.__setattr__(self, "devices", str(self.devices))
        count = self.device_count
        if self.accelerator == "cpu":
            check_devices_on_cpu(self.devices)
        if count is not None:
            check_batch_split(self.batch_size, count * self.num_nodes, f" ({count} devices x {self.num_nodes} nodes)")

    @property
    def device_count(self) -> int | None:
        """Devices per node when ``devices`` fixes it, None for ``auto``."""
        text = self.devices.strip()
        if text == "auto":
            return None
        try:
            if names_device_ids(text):
                ids = [int(part) for part in text.strip("[]").split(",") if part.strip()]
                count = len(ids)
            else:
                count = int(text)
        except ValueError:
            raise UserError(f"devices must be 'auto', a count or a list like 0,1; got {self.devices!r}") from None
        if count <= 0:
            raise UserError(f"devices must be >= 1, got {self.devices!r}")
        return count

    @functools.cached_property
    def run_id(self) -> str:
        # cached: a frozen config never changes, and grids read it several times per run
        return run_id(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from nested settings (a TOML/JSON file, a grid cell). A ``run_id`` key, as in a
        run's ``config.json``, is accepted when it is the id these settings give, refused otherwise."""
        if not isinstance(values, dict) or "run_id" not in values:
            return from_dict(cls, values)
        values = dict(values)
        claimed = values.pop("run_id")
        cfg = from_dict(cls, values)
        if claimed != cfg.run_id:
            raise UserError(
                f"run_id {claimed!r} does not match these settings, whose run id is {cfg.run_id} "
                "(edited config? drop the run_id key)"
            )
        return cfg

    def replace(self, **changes: Any) -> TrainConfig:
        new = dataclasses.replace(self, **changes)
        if "run_id" in self.__dict__ and all(
            # a new optim (its lr) changes optim's own identity: the tricks' may be read with the old one
            _identity_of(key, value, self.optim.lr) == _identity_of(key, getattr(self, key), self.optim.lr)
            for key, value in changes.items()
        ):
            new.__dict__["run_id"] = self.__dict__["run_id"]  # placing a run (paths, devices) keeps its id
        return new
