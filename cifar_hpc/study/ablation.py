"""The standard ablation a grid's ``[ablation]`` table generates from trick names (``study.grid``
reads the rest of a grid file): a baseline, each trick alone, the full recipe and the recipe minus
each trick; the generated cells that would repeat another cell (few tricks) are left out, and said.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from cifar_hpc.base.errors import UserError
from cifar_hpc.config.settings import merge
from cifar_hpc.study.plan import Cell
from cifar_hpc.training.tricks import CLASHES, TRICK_OFF, TRICK_ON, TRICKS


def ablation_cells(tricks: list[str], on: dict[str, dict[str, Any]] | None = None) -> tuple[list[Cell], dict[str, str]]:
    """The standard ablation: a plain baseline; each trick added alone (``+trick``, compared with
    the baseline); the full recipe (compared with the baseline); and the full recipe minus each of
    its tricks (``full-trick``, compared with ``full``: the leave-one-out view).

    The full recipe holds only tricks that act together: a trick that a clash switches off when its
    winner is in the recipe (early stopping under SWA) is left out of it, written off explicitly, so
    ``full`` is what is trained. It has no ``full-trick`` cell (that would train ``full`` again); its
    effect is still measured by ``+trick`` against the baseline.

    With few tricks in the recipe the derived cells repeat others: with two, ``full-a`` is ``+b``;
    with one, ``full`` is ``+a`` and ``full-a`` the baseline. Such a derived cell is left out and
    the earlier cell stands for it: returns the cells and ``{left-out name: the cell standing for it}``
    (the other comparison of that run, e.g. ``full`` vs ``+b``, is one ``--baseline`` away).
    """
    on = {**TRICK_ON, **(on or {})}
    all_off: dict[str, Any] = {}
    for trick in TRICKS:
        all_off = merge(all_off, TRICK_OFF[trick])
    losers = {clash.loser for clash in CLASHES if clash.winner in tricks}
    recipe = [trick for trick in tricks if trick not in losers]
    full = all_off
    for trick in recipe:
        full = merge(full, on[trick])
    cells = [Cell("baseline", all_off)]
    cells += [Cell(f"+{trick}", merge(all_off, on[trick]), "baseline") for trick in tricks]
    derived = [Cell("full", full, "baseline")]
    derived += [Cell(f"full-{trick}", merge(full, TRICK_OFF[trick]), "full") for trick in recipe]
    stand_ins: dict[str, str] = {}
    for cell in derived:
        same = next((kept.name for kept in cells if kept.overrides == cell.overrides), None)
        if same is None:
            cells.append(replace(cell, compare_to=stand_ins.get(cell.compare_to, cell.compare_to)))
        else:
            stand_ins[cell.name] = same
    return cells, stand_ins


def stand_in_note(source: str, stand_ins: dict[str, str]) -> str:
    """The one line that says which generated cells another stands for (``ablation_cells``)."""
    pairs = ", ".join(f"{kept} = {dropped}" for dropped, kept in stand_ins.items())
    return (
        f"note: {source}: [ablation] with so few tricks some generated cells repeat others; each setting "
        f"runs once, under the first name: {pairs}"
    )


def read_ablation(raw: Any, source: str) -> tuple[list[Cell], dict[str, str]]:
    """A grid file's ``[ablation]`` table (``tricks``, optional ``on``) checked, and its cells
    (``ablation_cells``); none without one."""
    if raw is None:
        return [], {}
    table = _table(raw, f"{source}: [ablation]")
    unknown = sorted(set(table) - {"tricks", "on"})
    if unknown:
        raise UserError(f"{source}: [ablation] has unknown key {unknown[0]!r}; valid: on, tricks")
    tricks = table.get("tricks", [])
    if not isinstance(tricks, list) or not tricks:
        raise UserError(f"{source}: [ablation] tricks must be a non-empty list of trick names")
    for trick in tricks:
        if trick not in TRICKS:
            raise UserError(f"{source}: unknown trick {trick!r}; valid: {', '.join(TRICKS)}")
    on = _table(table.get("on", {}), f"{source}: [ablation.on]")
    for trick in on:
        if trick not in TRICKS:
            raise UserError(f"{source}: [ablation.on] names unknown trick {trick!r}; valid: {', '.join(TRICKS)}")
    return ablation_cells(tricks, on)


def _table(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UserError(f"{what} must be a table, got {value!r}")
    return value
