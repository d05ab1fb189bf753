"""The precedence of one run's settings, as ``cifar-hpc train`` applies it (later wins):

    the dataclass defaults < a config file (``--config``) < flags < each ``--set key=value``

Small pure functions over nested settings (the keys of a run's ``config.json``); ``TrainConfig``
checks the values. A config file is TOML, or JSON such as a run's ``config.json``, whose ``run_id``
must be the id its settings give (an edited file is refused) and is then dropped: flags on top of it
make another run, with its own id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cifar_hpc.base.errors import UserError
from cifar_hpc.config.settings import assignment, merge, read_toml
from cifar_hpc.config.train_config import TrainConfig


def resolve(config: Path | None, flags: dict[str, Any], sets: Iterable[str]) -> TrainConfig:
    """Defaults, then the config file, then ``flags`` (by dotted key, e.g. ``optim.lr``), then each ``--set``."""
    from_file = file_settings(read_config_file(config)) if config else {}
    overridden = with_sets(with_flags(from_file, flags), sets)
    return TrainConfig.from_dict(without_stale_fingerprint(from_file, overridden))


def read_config_file(path: Path) -> dict[str, Any]:
    """A config file's settings: JSON for ``.json``, else TOML; one line (``UserError``) when it cannot be read."""
    if path.suffix != ".json":
        return read_toml(path, "config file")
    try:
        values = json.loads(path.read_text())
    except OSError as error:
        raise UserError(f"cannot read config file {path}: {error.strerror}") from None
    except ValueError as error:
        raise UserError(f"config file {path} is not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise UserError(f"config file {path} must hold a JSON object of settings")
    return values


def file_settings(values: dict[str, Any]) -> dict[str, Any]:
    """A config file's settings without its ``run_id``: a run's config.json names the run its settings
    give, so an edited one is refused (``UserError``); then the flags change what they change (that
    is another run, with its own id)."""
    if "run_id" not in values:
        return values
    TrainConfig.from_dict(values)
    return {key: value for key, value in values.items() if key != "run_id"}


def with_flags(settings: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with each flag's value at its dotted key (``{"optim.lr": 0.1}``)."""
    for key, value in flags.items():
        settings = merge(settings, nested(key, value))
    return settings


def with_sets(settings: dict[str, Any], sets: Iterable[str]) -> dict[str, Any]:
    """``settings`` with each ``key=value`` of ``--set`` applied in order (``settings.assignment``)."""
    for text in sets:
        settings = merge(settings, assignment(text))
    return settings


def without_stale_fingerprint(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """``after`` without the data fingerprint ``before`` (a config file) carried when the overrides
    changed ``data.dir``: other data is another run, fingerprinted from its own folder."""
    data = _data(after)
    if data.get("dir") == _data(before).get("dir") or "fingerprint" not in data:
        return after
    return {**after, "data": {key: value for key, value in data.items() if key != "fingerprint"}}


def own_folder(cfg: TrainConfig, config: Path, study: Path, *, out_given: bool) -> TrainConfig:
    """A run reproduced (``--from-run``) with changes is another run: it gets its own folder in the
    original's study (``<study>/<its id>``, where ``status``, ``logs`` and ``collect`` look) instead of
    the original's, which would refuse it. Unchanged, it keeps the original's folder: resumed, or
    skipped when completed."""
    if out_given or cfg.run_id == read_config_file(config).get("run_id"):
        return cfg
    return cfg.replace(out_dir=str(study / cfg.run_id))


def nested(key: str, value: Any) -> dict[str, Any]:
    """``optim.lr``, 0.1 as ``{"optim": {"lr": 0.1}}``."""
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def _data(settings: dict[str, Any]) -> dict[str, Any]:
    section = settings.get("data")
    return section if isinstance(section, dict) else {}
