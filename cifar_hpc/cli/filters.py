"""The overrides and filters ``submit`` and ``grid show`` share (``cifar_hpc.study.choose``), and the
choice of runs ``collect`` and ``report`` share (``cifar_hpc.report.versions``): one definition of each
option, so that the commands spell and explain them the same way."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

Sets = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Force a setting on every run, over the grid's base and each cell's own (dotted key, value read as "
        "TOML, as train --set), e.g. --set epochs=1 --set optim.lr=0.1. An axis key (seed, model, an axis of "
        "the grid) replaces that axis by the one value. Repeatable.",
    ),
]
Cells = Annotated[
    Optional[str],
    typer.Option(
        metavar="A,B",
        help="Only these cells, e.g. --cells +swa,+clip (their runs keep their ids; a reference cell left out "
        "is not added, a note says so).",
    ),
]
Models = Annotated[
    Optional[str],
    typer.Option(metavar="A,B", help="Replace the grid's models, e.g. --models resnet18."),
]
Seeds = Annotated[
    Optional[str],
    typer.Option(
        help="Replace the grid's seeds: 0-9, 0,3,7 or 0-2,5. The old seeds keep their run ids, so only "
        "the new ones are submitted."
    ),
]
Where = Annotated[
    Optional[list[str]],
    typer.Option(
        "--where",
        metavar="KEY=VALUE",
        help="Only the runs with this setting (dotted key, value read as TOML, as --set), e.g. --where epochs=3 "
        "--where optim.lr=0.01: another version of a cell than the grid's own. Repeatable.",
    ),
]
AllVersions = Annotated[
    bool,
    typer.Option(
        "--all-versions",
        help="Each version of a cell (runs of it with other settings: a quick --set check, an edited grid) as "
        "its own row, labelled with what tells it apart, e.g. sgd [epochs=3]; default: the grid's own version.",
    ),
]
