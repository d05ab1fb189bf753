"""What a run's ``auto`` device settings resolve to on this machine: GPU or CPU, precision, memory format."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cifar_hpc.base.errors import UserError
from cifar_hpc.config.train_config import TrainConfig, check_devices_on_cpu


@dataclass(frozen=True)
class DeviceSettings:
    """A run's device settings with ``auto`` resolved (``resolve_device_settings``)."""

    accelerator: str
    """Lightning's ``accelerator``: ``gpu`` or ``cpu``."""
    precision: str
    """Lightning's ``precision``: ``bf16-mixed`` on a GPU that has it, else ``32-true`` (unless the config fixes it)."""
    channels_last: bool
    """Convolutions in channels-last memory format (on for GPUs unless the config says)."""
    on_gpu: bool
    """The run trains on CUDA GPUs."""


def resolve_device_settings(cfg: TrainConfig) -> DeviceSettings:
    """``cfg``'s accelerator, precision and memory format as they apply here; one line (``UserError``)
    when it asks for a GPU torch cannot see, or names GPU indices for a run that lands on CPU."""
    on_gpu = cfg.accelerator in ("gpu", "cuda") or (cfg.accelerator == "auto" and torch.cuda.is_available())
    if on_gpu and not torch.cuda.is_available():
        raise UserError(f"accelerator {cfg.accelerator!r} asked for, but torch sees no CUDA GPU here")
    if not on_gpu:
        check_devices_on_cpu(cfg.devices)  # auto resolved to CPU: GPU indices mean nothing here
    precision = cfg.precision
    if precision == "auto":
        precision = "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true"
    channels_last = on_gpu if cfg.channels_last is None else cfg.channels_last
    return DeviceSettings("gpu" if on_gpu else "cpu", precision, channels_last, on_gpu)
