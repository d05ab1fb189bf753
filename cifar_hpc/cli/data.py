"""``cifar-hpc data``: get the dataset onto the shared filesystem before submitting jobs.

Thin commands over ``cifar_hpc.data.fetch`` (download) and ``cifar_hpc.data.cifar_files`` (the format); a
``UserError`` is left to the top-level CLI, which prints one line and exits 2. ``cifar_hpc.data.cifar_files``
and numpy are imported inside the commands that need them: every ``cifar-hpc`` start imports this
module, ``--help`` included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cifar_hpc.data import fetch

app = typer.Typer(help="Get the CIFAR-10 data: download the real set or write a generated one.", no_args_is_help=True)

DataDir = Annotated[
    Path,
    typer.Option("--dir", help="Folder that holds (or will hold) cifar-10-batches-py/, or that folder itself."),
]


@app.command()
def download(
    data_dir: DataDir = Path("data"),
    url: Annotated[str, typer.Option(help="Where to fetch cifar-10-python.tar.gz from (a mirror works).")] = (
        fetch.CIFAR10_URL
    ),
    md5: Annotated[str, typer.Option(help="Expected MD5 of the archive.")] = fetch.CIFAR10_MD5,
) -> None:
    """Download and extract CIFAR-10 once, checksum verified; safe when many jobs call it at once."""
    typer.echo(fetch.download(data_dir, url=url, md5=md5, progress=True))


@app.command()
def synth(
    data_dir: DataDir = Path("data"),
    train_per_batch: Annotated[int, typer.Option(min=1, help="Training images in each of the 5 batch files.")] = 1000,
    test: Annotated[int, typer.Option(min=1, help="Images in the test batch.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the noise and label order.")] = 0,
) -> None:
    """Write a small, learnable GENERATED dataset in CIFAR-10's format, to test the pipeline offline."""
    from cifar_hpc.data import cifar_files

    path = cifar_files.write_synthetic(data_dir, train_per_batch=train_per_batch, test=test, seed=seed)
    typer.echo(path)
    typer.echo("This is GENERATED data, not CIFAR-10: accuracies on it say nothing about CIFAR-10.")


@app.command()
def verify(data_dir: DataDir = Path("data")) -> None:
    """Read every batch file and print what the folder holds: real or generated, and how many images."""
    import numpy as np

    from cifar_hpc.data import cifar_files, layout

    arrays = cifar_files.load_cifar10(data_dir)
    typer.echo(layout.batch_dir(data_dir))
    typer.echo(f"kind: {arrays.kind}" + (" (GENERATED data, not CIFAR-10)" if arrays.generated else ""))
    typer.echo(f"train: {len(arrays.train_y)} images, test: {len(arrays.test_y)} images")
    counts = np.bincount(arrays.train_y, minlength=len(cifar_files.CLASSES))
    typer.echo("train per class: " + ", ".join(f"{n} {c}" for c, n in zip(cifar_files.CLASSES, counts)))
