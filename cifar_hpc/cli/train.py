"""Train one run of the seed recipe and write <out>/result.json."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cifar_hpc.errors import UserError

_DATA = "Data"
_OPTIM = "Optimisation"
_AUG = "Augmentation"
_TRICKS = "Tricks"
_RUN = "Devices and output"
_WANDB = "Weights & Biases"


def train(
    config: Annotated[Optional[Path], typer.Option(help="TOML or JSON file with a base config; flags override it.", rich_help_panel=_RUN)] = None,
    model: Annotated[Optional[str], typer.Option(help="resnet18 | resnet34 (CIFAR stem).", rich_help_panel=_OPTIM)] = None,
    optimizer: Annotated[Optional[str], typer.Option(help="sgd | adam.", rich_help_panel=_OPTIM)] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate.", rich_help_panel=_OPTIM)] = None,
    weight_decay: Annotated[Optional[float], typer.Option(rich_help_panel=_OPTIM)] = None,
    momentum: Annotated[Optional[float], typer.Option(help="SGD momentum / Adam beta1.", rich_help_panel=_OPTIM)] = None,
    schedule: Annotated[Optional[str], typer.Option(help="onecycle | cosine | constant.", rich_help_panel=_OPTIM)] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Global batch per step, split over all processes.", rich_help_panel=_OPTIM)] = None,
    epochs: Annotated[Optional[int], typer.Option(rich_help_panel=_OPTIM)] = None,
    seed: Annotated[Optional[int], typer.Option(rich_help_panel=_OPTIM)] = None,
    precision: Annotated[Optional[str], typer.Option(help="auto | 32-true | 16-mixed | bf16-mixed.", rich_help_panel=_RUN)] = None,
    data_dir: Annotated[Optional[str], typer.Option(help="Folder with cifar-10-batches-py/.", rich_help_panel=_DATA)] = None,
    loader: Annotated[Optional[str], typer.Option(help="torchvision | device (whole dataset on the device).", rich_help_panel=_DATA)] = None,
    val_fraction: Annotated[Optional[float], typer.Option(rich_help_panel=_DATA)] = None,
    num_workers: Annotated[Optional[int], typer.Option(help="DataLoader workers per process (default: CPUs - 1, max 8).", rich_help_panel=_DATA)] = None,
    stage: Annotated[Optional[bool], typer.Option("--stage/--no-stage", help="Copy data to node-local scratch first.", rich_help_panel=_DATA)] = None,
    crop: Annotated[Optional[bool], typer.Option("--crop/--no-crop", rich_help_panel=_AUG)] = None,
    crop_padding: Annotated[Optional[int], typer.Option(rich_help_panel=_AUG)] = None,
    flip: Annotated[Optional[bool], typer.Option("--flip/--no-flip", rich_help_panel=_AUG)] = None,
    rotate: Annotated[Optional[bool], typer.Option("--rotate/--no-rotate", rich_help_panel=_AUG)] = None,
    rotate_degrees: Annotated[Optional[float], typer.Option(rich_help_panel=_AUG)] = None,
    normalize: Annotated[Optional[bool], typer.Option("--normalize/--no-normalize", rich_help_panel=_AUG)] = None,
    lr_find: Annotated[Optional[bool], typer.Option("--lr-find/--no-lr-find", help="LR finder before training.", rich_help_panel=_TRICKS)] = None,
    swa: Annotated[Optional[bool], typer.Option("--swa/--no-swa", help="Stochastic weight averaging.", rich_help_panel=_TRICKS)] = None,
    swa_lrs: Annotated[Optional[float], typer.Option(rich_help_panel=_TRICKS)] = None,
    swa_epoch_start: Annotated[Optional[float], typer.Option(help="Fraction of epochs before SWA starts.", rich_help_panel=_TRICKS)] = None,
    accumulate: Annotated[Optional[str], typer.Option(help="Accumulation schedule epoch:factor,... e.g. 0:1,4:2.", rich_help_panel=_TRICKS)] = None,
    clip: Annotated[Optional[bool], typer.Option("--clip/--no-clip", help="Gradient clipping by norm.", rich_help_panel=_TRICKS)] = None,
    clip_value: Annotated[Optional[float], typer.Option(rich_help_panel=_TRICKS)] = None,
    early_stop: Annotated[Optional[bool], typer.Option("--early-stop/--no-early-stop", help="Early stopping on val_acc.", rich_help_panel=_TRICKS)] = None,
    early_stop_patience: Annotated[Optional[int], typer.Option(rich_help_panel=_TRICKS)] = None,
    accelerator: Annotated[Optional[str], typer.Option(help="auto | cpu | gpu.", rich_help_panel=_RUN)] = None,
    devices: Annotated[Optional[str], typer.Option(help="auto, a count, or a list like 0,1.", rich_help_panel=_RUN)] = None,
    num_nodes: Annotated[Optional[int], typer.Option(rich_help_panel=_RUN)] = None,
    channels_last: Annotated[Optional[bool], typer.Option("--channels-last/--no-channels-last", help="Default: on for GPUs.", rich_help_panel=_RUN)] = None,
    compile: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the model.", rich_help_panel=_RUN)] = None,
    out: Annotated[Optional[str], typer.Option(help="Output folder (default runs/<run_id>).", rich_help_panel=_RUN)] = None,
    telemetry_interval: Annotated[Optional[float], typer.Option(help="Seconds between NVML samples.", rich_help_panel=_RUN)] = None,
    wandb_mode: Annotated[Optional[str], typer.Option(help="auto | online | offline | disabled.", rich_help_panel=_WANDB)] = None,
    wandb_project: Annotated[Optional[str], typer.Option(rich_help_panel=_WANDB)] = None,
    wandb_group: Annotated[Optional[str], typer.Option(rich_help_panel=_WANDB)] = None,
    wandb_tags: Annotated[Optional[str], typer.Option(help="Comma-separated tags.", rich_help_panel=_WANDB)] = None,
) -> None:
    """Train one run of the seed recipe and write <out>/result.json."""
    flags = {
        "model": model, "seed": seed, "epochs": epochs, "batch_size": batch_size, "precision": precision,
        "accelerator": accelerator, "devices": devices, "num_nodes": num_nodes, "channels_last": channels_last,
        "compile": compile, "out_dir": out, "telemetry_interval_s": telemetry_interval,
        "optim": {"name": optimizer, "lr": lr, "weight_decay": weight_decay, "momentum": momentum, "schedule": schedule},
        "augment": {"crop": crop, "crop_padding": crop_padding, "flip": flip, "rotate": rotate,
                    "rotate_degrees": rotate_degrees, "normalize": normalize},
        "tricks": {"lr_find": lr_find, "swa": swa, "swa_lrs": swa_lrs, "swa_epoch_start": swa_epoch_start,
                   "accumulate": accumulate, "clip": clip, "clip_value": clip_value, "early_stop": early_stop,
                   "early_stop_patience": early_stop_patience},
        "data": {"dir": data_dir, "loader": loader, "val_fraction": val_fraction, "num_workers": num_workers, "stage": stage},
        "wandb": {"mode": wandb_mode, "project": wandb_project, "group": wandb_group,
                  "tags": wandb_tags.split(",") if wandb_tags else None},
    }
    from cifar_hpc.config import TrainConfig
    from cifar_hpc.train import output_dir, run

    cfg = TrainConfig.from_dict(merge(read_config_file(config) if config else {}, given(flags)))
    result = run(cfg)
    where = output_dir(cfg) / "result.json"
    if result["status"] != "completed":
        typer.echo(f"run {cfg.run_id} FAILED: {result['error']} (details in {where})", err=True)
        raise typer.Exit(1)
    label = " [GENERATED data, not CIFAR-10]" if result["data"] == "generated" else ""
    typer.echo(f"run {cfg.run_id}: test_acc={result['test_acc']:.4f}{label}")
    typer.echo(f"result: {where}")


def given(flags: dict[str, Any]) -> dict[str, Any]:
    """Drop the options the user did not give (None), keeping nested sections that have any."""
    out = {}
    for key, value in flags.items():
        if isinstance(value, dict):
            value = given(value)
            if value:
                out[key] = value
        elif value is not None:
            out[key] = value
    return out


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = merge(merged.get(key, {}), value) if isinstance(value, dict) else value
    return merged


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as error:
        raise UserError(f"cannot read config file {path}: {error.strerror}") from None
    try:
        return json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as error:
        raise UserError(f"config file {path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {error}") from None
