"""A run's identity: which settings make its ``run_id`` (and which do not), and what its seeds share.

``TrainConfig.run_id`` hashes the config through ``run_id``; ``setting_of`` reads the same identity
from a config as written (``config.json``, a result's ``config``), of this version or an older one.
A setting added later is written so that a run that trains as before keeps its id
(``_swa_lr_identity``: SWA's LR, relative to the peak LR since ``swa_lr_factor``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

# Fields that do not change what is learnt: where things go, how they are logged, and how many
# processes share the (fixed, global) batch.
NOT_IDENTITY = {
    "out_dir",
    "grid",
    "cell",
    "telemetry_interval_s",
    "compile_mode",
    "checkpoint_every_s",
    "wandb",
    "accelerator",
    "devices",
    "num_nodes",
    "data.dir",
    "data.num_workers",
    "data.stage",
}


def in_identity(key: str) -> bool:
    """Whether the dotted setting ``key`` is part of a run's identity (``data.dir`` is not, nor anything
    under ``wandb``)."""
    return key not in NOT_IDENTITY and key.split(".", 1)[0] not in NOT_IDENTITY


LEGACY_SWA_LRS = 1e-2
"""``tricks.swa_lrs`` as every run id before ``swa_lr_factor`` wrote it: the absolute default then."""


def _swa_lr_identity(tricks: dict[str, Any], peak_lr: Any) -> dict[str, Any]:
    """The ``tricks`` identity entries with SWA's LR as run ids have always written it, so that a run
    that trains as before keeps its id (its folder, W&B run, "already completed") and one that
    trains otherwise gets a new one. SWA's LR is one absolute ``swa_lrs`` wherever it is known
    before training: the value given, else ``swa_lr_factor`` x the peak (0.2 x 0.05 = the old
    default 0.01: the same id), and the old default when SWA is off (then it acts on nothing).
    Only a factor of the LR finder's pick, unknown until the run, is written as ``swa_lr_factor``.
    Reads the old form (``swa_lrs``, no factor: config.json of an older cifar-hpc) unchanged."""
    tricks = dict(tricks)
    absolute, factor = tricks.pop("swa_lrs", None), tricks.pop("swa_lr_factor", None)
    if absolute is None and factor is not None:
        if not tricks.get("swa"):
            absolute = LEGACY_SWA_LRS
        elif tricks.get("lr_find") or peak_lr is None:
            return {**tricks, "swa_lr_factor": factor}
        else:
            absolute = float(f"{factor * peak_lr:.12g}")  # 0.2 x 0.05 is 0.010000000000000002 in floats
    return {**tricks, "swa_lrs": absolute}


def _identity_of(name: str, value: Any, peak_lr: float | None = None) -> Any:
    """What a top-level field contributes to the run id (a section: its identity fields; None:
    nothing). ``peak_lr``: the config's ``optim.lr``, which SWA's LR is relative to (``tricks``)."""
    if name in NOT_IDENTITY:
        return None
    if dataclasses.is_dataclass(value):
        values = {
            f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f"{name}.{f.name}" not in NOT_IDENTITY
        }
        return _swa_lr_identity(values, peak_lr) if name == "tricks" else values
    return value


def run_id(cfg: Any) -> str:
    """A short stable hash of the run's config, seed included: 12 hex characters. (Field by field
    rather than ``asdict``, whose deep copies dominated expanding a 1,000-run grid; same JSON.)"""
    values = {
        f.name: _identity_of(f.name, getattr(cfg, f.name), cfg.optim.lr)
        for f in dataclasses.fields(cfg)
        if f.name not in NOT_IDENTITY
    }
    text = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def setting_of(config: dict[str, Any]) -> str:
    """What a run's seeds share: the run identity without the seed, from a config as written
    (``config.json``, a result's ``config``, ``TrainConfig.to_dict()``). Runs with equal settings are
    seeds of one row of the comparison table; runs that differ in anything that changes what is
    learnt (an axis value, an edited cell, other data) never are. 12 hex characters."""

    text = json.dumps(written_identity(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def written_identity(config: dict[str, Any]) -> dict[str, Any]:
    """The settings of a config as written that its seeds share (nested; ``setting_of`` hashes them):
    labels, paths, devices and the seed left out, SWA's LR as the run id writes it, so that a config
    of an older cifar-hpc (an absolute ``swa_lrs``) and one of this version that trains the same
    are equal. Compare these, not the raw configs, to tell two versions of a cell apart."""

    def identity(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        kept = {}
        for key, value in values.items():
            name = f"{prefix}{key}"
            if name in NOT_IDENTITY or name in ("seed", "run_id"):
                continue
            kept[key] = identity(value, f"{name}.") if isinstance(value, dict) else value
        return kept

    kept = identity(config)
    if isinstance(kept.get("tricks"), dict):
        kept["tricks"] = _swa_lr_identity(kept["tricks"], (kept.get("optim") or {}).get("lr"))
    return kept
