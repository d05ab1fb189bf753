"""A run's folder belongs to one run: ``config.json`` names it, and no other run may use the folder.

Without this, ``cifar-hpc train --out runs/t1`` with changed settings would resume the other run's
``last.ckpt`` and overwrite its ``result.json`` under the new id. A folder that holds another run is
refused (one line, exit 2) unless the user asks to replace it (``--overwrite``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from cifar_hpc.base.errors import UserError
from cifar_hpc.config.settings import flatten
from cifar_hpc.config.train_config import TrainConfig
from cifar_hpc.training.results import CONFIG_FILE, RESULT_FILE, write_json_atomic


def output_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.out_dir) if cfg.out_dir else Path("runs") / cfg.run_id


def owner(folder: Path) -> tuple[str | None, dict[str, Any] | None]:
    """The run id a folder's ``config.json`` (else its ``result.json``) names, and that run's settings."""
    for name in (CONFIG_FILE, RESULT_FILE):
        try:
            values = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(values, dict) and isinstance(values.get("run_id"), str):
            settings = values.get("config", values) if name == RESULT_FILE else values
            return values["run_id"], settings if isinstance(settings, dict) else None
    return None, None


def claim(folder: Path, cfg: TrainConfig, *, overwrite: bool = False, rank_zero: bool = True) -> None:
    """Make ``folder`` this run's: refuse it when it holds another run, or, with ``overwrite``,
    delete that run (on global rank 0 only). A folder holding this very run is resumed."""
    other, settings = owner(folder)
    if other is None or other == cfg.run_id:
        return
    if not overwrite:
        changed = differences(settings or {}, {"run_id": cfg.run_id, **cfg.to_dict()})
        raise UserError(
            f"{folder} holds another run ({other}; this one is {cfg.run_id}"
            + (f", differing in {changed}" if changed else "")
            + "): give another --out, or --overwrite to replace it"
        )
    if rank_zero:
        shutil.rmtree(folder)


def write_config(folder: Path, cfg: TrainConfig) -> None:
    """``config.json``: the settings that made the run, with its id (``cifar-hpc train --config`` reads it back)."""
    write_json_atomic(folder / CONFIG_FILE, {"run_id": cfg.run_id, **cfg.to_dict()})


def differences(old: dict[str, Any], new: dict[str, Any], *, limit: int = 4) -> str:
    """The dotted settings that differ (at most ``limit`` named), e.g. ``epochs, data.fingerprint``."""
    # through JSON: config.json holds lists where a config holds tuples
    flat_old, flat_new = dict(flatten(old)), dict(flatten(json.loads(json.dumps(new))))
    ignored = {"run_id", "out_dir"}
    keys = sorted(
        k for k in flat_old.keys() | flat_new.keys() if k not in ignored and flat_old.get(k) != flat_new.get(k)
    )
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
