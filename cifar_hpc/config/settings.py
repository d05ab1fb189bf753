"""Settings written by users, turned into typed, validated dataclasses: the one loader for run
configs (``config.py``), cluster profiles (``profiles.py``) and grids (``grid.py``).

- ``read_toml`` / ``find_file``: TOML files named by path or by name in known folders (``tomllib``
  on Python 3.11+, the ``tomli`` backport before).
- ``merge``: nested tables, later values win.
- ``assignment``: a ``key.sub=value`` override from the command line, the value read as TOML.
- ``from_dict``: a nested dict into a (nested) frozen dataclass, checking every value against its
  annotation (``Literal`` choices, ``X | None``, ``tuple[str, ...]``, ``dict[K, V]``, nested
  dataclasses); a field's ``metadata["parse"]`` may normalise a value first. Range checks stay in
  each dataclass's ``__post_init__``. Every mistake is one ``UserError`` line naming the setting.
- ``field_docs``: a dataclass's field docstrings (the string under each field), for help texts.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import functools
import inspect
import itertools
import sys
import textwrap
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from cifar_hpc.base.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as a backport
    import tomli as tomllib


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file's tables, or one line saying why it cannot be read."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise UserError(f"cannot read {what} {path}: {error.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{what} {path} is not valid TOML: {error}") from None


def find_file(name_or_path: str, folders: list[Path], what: str) -> Path:
    """``x.toml`` is a path; anything else is a name looked up as ``<folder>/<name>.toml`` in order."""
    path = Path(name_or_path)
    if path.suffix == ".toml":
        if not path.is_file():
            raise UserError(f"{what} file {path} does not exist")
        return path
    for folder in folders:
        candidate = folder / f"{name_or_path}.toml"
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for folder in folders if folder.is_dir() for p in folder.glob("*.toml")})
    raise UserError(
        f"unknown {what} {name_or_path!r}; known: {', '.join(known) or 'none'} (or give a path to a .toml file)"
    )


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Nested merge; values of ``overrides`` win; neither input is modified."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def assignment(text: str) -> dict[str, Any]:
    """``optim.lr=0.1`` as ``{"optim": {"lr": 0.1}}``. The value is read as a TOML value (number,
    boolean, quoted string, array, inline table); anything else is taken as a plain string."""
    key, sep, raw = text.partition("=")
    parts = [part.strip() for part in key.split(".")]
    if not sep or not all(parts):
        raise UserError(f"--set needs key=value with a dotted key such as optim.lr=0.1, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    for part in reversed(parts):
        value = {part: value}
    return value


def from_dict(cls: type, values: Any, path: str = "") -> Any:
    """Build a (nested) config dataclass, refusing unknown keys by name with the valid ones."""
    if not isinstance(values, dict):
        raise UserError(f"{path.rstrip('.') or 'config'} must be a table of settings, got {values!r}")
    hints = _type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise UserError(f"unknown setting {path}{unknown[0]!s}; valid: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in values.items():
        parse = fields[name].metadata.get("parse")
        kwargs[name] = parse(value) if parse else coerce(f"{path}{name}", hints[name], value)
    return cls(**kwargs)


def coerce(name: str, hint: Any, value: Any) -> Any:
    """``value`` checked against the annotation ``hint``; ints are accepted where floats are expected."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in args:
            try:
                return coerce(name, option, value)
            except UserError:
                continue
        raise _wrong(name, hint, value)
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else from_dict(hint, value, f"{name}.")
    if origin is Literal:
        # the choice itself is checked by the dataclass, which knows what to call it in the message
        if any(isinstance(value, type(arg)) and not isinstance(value, bool) for arg in args):
            return value
        raise _wrong(name, hint, value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _wrong(name, hint, value)  # a string is not a list of one: "/data" is not ('/', 'd', ...)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(f"{name}[{i}]", args[0], item) for i, item in enumerate(value))
        if len(value) != len(args):
            raise _wrong(name, hint, value)
        return tuple(coerce(f"{name}[{i}]", kind, item) for i, (kind, item) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise _wrong(name, hint, value)
        key_type, value_type = args
        return {
            coerce(f"{name} key", key_type, key): coerce(f"{name}.{key}", value_type, item)
            for key, item in value.items()
        }
    if hint is Any:
        return value
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    raise _wrong(name, hint, value)


def _wrong(name: str, hint: Any, value: Any) -> UserError:
    return UserError(f"setting {name} has the wrong type: {value!r} (expected {describe(hint)})")


def describe(hint: Any) -> str:
    """An annotation in words, for messages and help: ``tuple[str, ...]`` is "a list of strings"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(arg) for arg in args if arg is not type(None))
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {describe(args[0]).replace('a ', '', 1).replace('an ', '', 1)}s"
        return f"a list of {len(args)} values"
    if origin is dict or dataclasses.is_dataclass(hint):
        return "a table"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, str(hint))


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """Resolved annotations of a config class (resolving them is slow; a grid builds thousands)."""
    return typing.get_type_hints(cls)


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass, joined to one line ({} if the source is gone)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    docs: dict[str, str] = {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def flatten(values: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested settings as ``(dotted key, value)`` pairs: ``{"optim": {"lr": 0.1}}`` → ``("optim.lr", 0.1)``."""
    for key, value in values.items():
        if isinstance(value, dict):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value
