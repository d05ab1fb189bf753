"""Versions of a cell: the runs of one cell, at one value of every axis, whose settings differ.

A study folder gets them when its grid is edited and resubmitted, or when a quick check goes into it
(``submit --set epochs=3 --cells sgd --seeds 0``). Which version the table shows is the user's
choice, never "whichever submit ran last":

* by default the version the grid's file defines (``study.json``'s ``grid_defined``: the latest
  submission without ``--set`` that listed it), else (a study.json from before it recorded that,
  plain ``train`` runs) the version with the most completed runs. The others are left out, listed,
  and a warning says what tells them apart (``1 run of sgd with epochs=3 ... not shown``);
* ``--where KEY=VALUE`` keeps only the runs with those settings (dotted keys, values read and
  checked as ``--set`` reads them: ``parse_where``);
* ``--all-versions`` makes each version its own row, labelled with what tells it apart
  (``sgd [epochs=3]``).

A row is compared with its reference only when the two differ in exactly what the cell changes
(``mismatch``): the settings ``study.json`` recorded for the comparison (``RecordedRun.changes``),
else, not recorded, those in which the two cells differ in every pairing of their versions.
Pure: statuses and configs in, versions, labels and texts out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cifar_hpc.config.identity import in_identity  # the one rule of what makes a run's identity
from cifar_hpc.config.settings import assignment, flatten
from cifar_hpc.study.run_state import RunState
from cifar_hpc.study.states import RunStatus

MOST_KEYS = 3
"""Settings named in one label or warning; more are counted (``+2 more``)."""

_MISSING = object()


def _plain(value: Any) -> Any:
    """Lists and tuples alike (a config read back from JSON, a value parsed from TOML)."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def values_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config as written, as dotted keys: what ``--where`` matches (the seed included)."""
    return {key: _plain(value) for key, value in flatten(dict(config)) if key != "run_id"}


def identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """What its seeds share: ``values_of`` without the seed, labels, paths and devices."""
    return {key: value for key, value in values_of(config).items() if key != "seed" and in_identity(key)}


def differing(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The keys whose values differ (one side lacking a key counts), sorted."""
    return sorted(key for key in a.keys() | b.keys() if a.get(key, _MISSING) != b.get(key, _MISSING))


def show(value: Any) -> str:
    """A value as ``--where`` reads it back: TOML (``true``, ``3``, ``[1, 2]``), a plain word bare."""
    if value is _MISSING or value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):  # bare where TOML reads it back as this text ("3" or "true" as text: quoted)
        return value if value and " " not in value and assignment(f"v={value}")["v"] == value else json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return str(value)


def pairs(keys: Sequence[str], values: Mapping[str, Any]) -> str:
    """``epochs=3, optim.lr=0.1`` (at most ``MOST_KEYS``, then ``+N more``)."""
    shown = ", ".join(f"{key}={show(values.get(key, _MISSING))}" for key in keys[:MOST_KEYS])
    return shown + (f" (+{len(keys) - MOST_KEYS} more)" if len(keys) > MOST_KEYS else "")


def parse_where(texts: Sequence[str]) -> dict[str, Any]:
    """``--where`` as dotted keys and values, read and checked as ``--set`` is (one line with a
    did-you-mean for an unknown key)."""
    from cifar_hpc.base.errors import UserError
    from cifar_hpc.config.train_config import TrainConfig
    from cifar_hpc.study.choose import parse_sets

    sets = parse_sets(texts, "--where")
    given = dict(flatten(sets))
    try:  # in the form a run's config.json holds it: "0:1,15:2" is stored as [[0, 1], [15, 2]]
        stored = dict(flatten(TrainConfig.from_dict(sets).to_dict()))
    except UserError:
        stored = {}  # values no run can have: compared as written, so that they match nothing
    return {key: _plain(stored.get(key, value)) for key, value in given.items()}


def where_text(where: Mapping[str, Any]) -> str:
    return " ".join(f"--where {key}={show(value)}" for key, value in where.items())


def no_match(where: Mapping[str, Any], known: Sequence[Mapping[str, Any]]) -> str:
    """Why ``--where`` matched nothing: the values the study's runs have for its keys."""
    found = []
    for key in where:
        values = sorted({show(v.get(key, _MISSING)) for v in known}, key=lambda s: (len(s), s))
        found.append(f"{key}: {', '.join(values) or 'no run says'}")
    return f"{where_text(where)} matches no run of this study ({'; '.join(found)})"


@dataclass
class Version:
    """The runs of one cell at one axes value that share their settings."""

    setting: str | None
    statuses: list[RunStatus]
    identity: dict[str, Any] | None
    """Its settings (``identity``); None when none of its runs has a config yet."""

    @property
    def completed(self) -> int:
        return sum(s.state is RunState.COMPLETED for s in self.statuses)

    @property
    def grid_defined(self) -> int:
        return max((s.run.grid_defined for s in self.statuses), default=0)

    @property
    def changes(self) -> tuple[str, ...] | None:
        return next((s.run.changes for s in self.statuses if s.run.changes is not None), None)

    @property
    def submitted(self) -> float | None:
        """When its newest run was submitted (``study.json``'s jobs); None: not recorded."""
        times = [t.submitted_at for s in self.statuses for t in (s.run.slurm, s.run.local) if t and t.submitted_at]
        return max(times, default=None)

    def order(self) -> tuple:
        latest = max((str((s.run.result or {}).get("finished_at") or "") for s in self.statuses), default="")
        expansion = max((s.run.expansion for s in self.statuses), default=0)
        return (self.completed, len(self.statuses), expansion, latest, self.setting or "")


def shown_version(versions: Sequence[Version]) -> tuple[Version, str]:
    """The version the table shows by default, and why."""
    defined = [v for v in versions if v.grid_defined]
    if defined:
        return max(defined, key=lambda v: v.grid_defined), "as the grid defines it"
    return max(versions, key=Version.order), "the version with the most completed runs"


def telling_apart(versions: Sequence[Version]) -> list[str]:
    """The settings in which any two of the versions differ."""
    known = [v.identity for v in versions if v.identity is not None]
    return sorted({key for i, a in enumerate(known) for b in known[i + 1 :] for key in differing(a, b)})


def label(cell: str, version: Version, keys: Sequence[str]) -> str:
    """A version's row label with ``--all-versions``: ``sgd [epochs=3]``."""
    if version.identity is None or not keys:
        return f"{cell} [setting {(version.setting or '?')[:6]}]"
    return f"{cell} [{pairs(keys, version.identity)}]"


def when(seconds: float | None) -> str:
    return f" (submitted {time.strftime('%Y-%m-%d %H:%M', time.localtime(seconds))})" if seconds else ""


def left_out_warning(cell_runs: dict[str, int], hidden: Version, shown: Version, why: str) -> tuple[str, str]:
    """(the warning, what tells ``hidden`` apart) for a version the table leaves out; ``cell_runs``:
    the cells with such a version and their runs (the same difference in several cells: one line)."""
    cells = ", ".join(cell_runs)
    n = sum(cell_runs.values())
    runs = f"{n} run{'' if n == 1 else 's'} of {cells}"
    found, theirs = difference(hidden, shown)
    if hidden.identity is None or shown.identity is None:
        return f"{runs} of another configuration (no run of one started yet) not shown: --all-versions", found
    keys = differing(hidden.identity, shown.identity)
    where = where_text({key: hidden.identity[key] for key in keys[:MOST_KEYS] if key in hidden.identity})
    text = (
        f"{runs} with {found}{when(hidden.submitted)} not shown: the table has {theirs}, "
        f"{why}; {where + ' or ' if where else ''}--all-versions"
    )
    return text, found


def difference(hidden: Version, shown: Version) -> tuple[str, str]:
    """What tells two versions apart, as each has it: (``epochs=3``, ``epochs=2``)."""
    if hidden.identity is None or shown.identity is None:
        return "settings not known yet", ""
    keys = differing(hidden.identity, shown.identity)
    return pairs(keys, hidden.identity), pairs(keys, shown.identity)


def allowed_changes(
    mine: Sequence[dict[str, Any]], theirs: Sequence[dict[str, Any]], recorded: Sequence[str] | None
) -> set[str] | None:
    """What a comparison of two cells may change: the recorded settings, else those in which the two
    cells differ in every pairing of their versions (``mine``, ``theirs``: their known identities)."""
    if recorded is not None:
        return set(recorded)
    found = [set(differing(a, b)) for a in mine for b in theirs]
    return set.intersection(*found) if found else None


def mismatch(mine: dict[str, Any] | None, theirs: dict[str, Any] | None, allowed: set[str] | None) -> str | None:
    """Why a row cannot be compared with its reference (``reference trained 3 epochs, this row 2: no
    comparison``); None when they differ in exactly what the comparison changes, or it is not known."""
    if mine is None or theirs is None or allowed is None:
        return None
    # a key one side lacks is a config written by another cifar-hpc (a setting added since): not known
    actual = {key for key in differing(mine, theirs) if key in mine and key in theirs}
    reasons = []
    for key in sorted(actual - allowed):
        a, b = theirs.get(key, _MISSING), mine.get(key, _MISSING)
        if key == "epochs" and isinstance(a, int) and isinstance(b, int):
            reasons.append(f"reference trained {a} epochs, this row {b}")
        else:
            reasons.append(f"reference has {key}={show(a)}, this row {show(b)}")
    if reasons:
        return "; ".join(reasons) + ": no comparison"
    same = sorted(key for key in allowed - actual if key in mine and key in theirs)
    if same:
        return f"this row and its reference agree on {', '.join(same)}, which the comparison changes: no comparison"
    return None
