"""Settings named by dotted keys (``optim.lr``), the one reading of them for ``--set``, a grid's
``[base]`` and a cell's ``set`` (``cifar_hpc.study``), so that a key one of them takes the others take
too, and a mistake in any of them reads the same:

- ``undotted``: a table whose keys may be dotted (TOML's quoted ``"optim.name" = "adam"``) as the
  nested tables ``--set optim.name=adam`` gives.
- ``setting_items``: a nested table's (dotted key, value) pairs, down to single settings.
- ``check_setting``: one key and its value against ``TrainConfig``: an unknown key with the closest
  valid one ("did you mean epochs?"), a value of the wrong type or choice. Range checks that depend
  on other settings (the batch split across devices) come when the runs are built.
- ``checked_settings``: a table from a file, both of these, its mistakes blamed where they are written.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import typing
from collections.abc import Iterator
from typing import Any

from cifar_hpc.base.errors import UserError
from cifar_hpc.config.settings import coerce, from_dict, merge
from cifar_hpc.config.train_config import TrainConfig


def undotted(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with each dotted key split into nested tables, merged in order:
    ``{"optim.name": "adam", "optim": {"lr": 0.1}}`` is ``{"optim": {"name": "adam", "lr": 0.1}}``."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        parts = [part.strip() for part in str(key).split(".")]
        if not all(parts):
            raise UserError(f"setting key {key!r} has an empty part; write e.g. optim.lr")
        value = undotted(value) if isinstance(value, dict) else value
        for part in reversed(parts):
            value = {part: value}
        nested = merge(nested, value)
    return nested


def setting_items(values: dict[str, Any], cls: type = TrainConfig, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` for each single setting of a nested table; a table given to a single
    setting (``accumulate = {0 = 1, 4 = 2}``) is its value, and an unknown key is yielded as it is
    (for ``check_setting`` to name)."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key, value in values.items():
        hint = _hints(cls).get(key) if key in fields else None
        if isinstance(value, dict) and dataclasses.is_dataclass(hint):
            yield from setting_items(value, hint, f"{prefix}{key}.")  # type: ignore[arg-type]
        else:
            yield f"{prefix}{key}", value


def check_setting(key: str, value: Any) -> None:
    """``UserError`` for a dotted key that names no setting of ``TrainConfig`` (with the closest
    valid one), a single setting used as a section, or a value of the wrong type or choice."""
    cls: type = TrainConfig
    *sections, name = key.split(".")
    for depth, section in enumerate([*sections, name]):
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        dotted = ".".join([*sections, name][: depth + 1])
        if section not in fields:
            close = difflib.get_close_matches(section, fields, n=1)
            hint = f" (did you mean {'.'.join([*sections[:depth], close[0]])}?)" if close else ""
            raise UserError(f"unknown setting {dotted}{hint}; valid: {', '.join(sorted(fields))}")
        hint_type = _hints(cls)[section]
        if depth < len(sections):
            if not dataclasses.is_dataclass(hint_type):
                raise UserError(f"{dotted} is a single setting, not a section")
            cls = hint_type
    if cls is TrainConfig:  # top level: its own checks need the other settings; the type and choice now
        checked = coerce(key, hint_type, value)
        choices = typing.get_args(hint_type) if typing.get_origin(hint_type) is typing.Literal else ()
        if choices and checked not in choices:
            raise UserError(f"{key} must be one of {', '.join(map(str, choices))}, got {checked!r}")
    else:  # a section's field: the section's own checks too (its other fields at their defaults)
        from_dict(cls, {name: value}, f"{'.'.join(sections)}.")


@functools.cache  # resolving annotations is slow; a grid checks each of its cells' keys
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def checked_settings(values: Any, where: str) -> dict[str, Any]:
    """A table of settings written in a file (a grid's ``[base]``, a cell's ``set``) read as ``--set``
    reads its keys: dotted keys nested (``undotted``), each setting checked (``check_setting``); a
    mistake is one line starting with ``where``, the place it is written."""
    if not isinstance(values, dict):
        raise UserError(f"{where} must be a table of settings, got {values!r}")
    try:
        nested = undotted(values)
        for key, value in setting_items(nested):
            check_setting(key, value)
    except UserError as error:
        raise UserError(f"{where}: {error}") from None
    return nested
