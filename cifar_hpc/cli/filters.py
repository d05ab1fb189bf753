"""The overrides and filters ``submit`` and ``grid show`` share (``cifar_hpc.study.choose``): one definition
of each option, so that both commands spell and explain them the same way."""

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
