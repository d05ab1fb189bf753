"""CIFAR-10's folder layout: the file names, where the batch folder is, and whether it is complete.

Kept apart from ``data.py`` (the reader and the generated set, which need numpy) so that commands
that only look at folders (``grid show``, the data fingerprint) stay fast on a login node.
"""

from __future__ import annotations

from pathlib import Path

from cifar_hpc.base.errors import UserError

BATCH_DIR = "cifar-10-batches-py"
GENERATED_MARKER = "GENERATED"
"""File inside ``BATCH_DIR`` written by ``write_synthetic``: its presence means "not CIFAR-10"."""

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
DATA_FILES = (*TRAIN_FILES, TEST_FILE)


def batch_dir(root: str | Path) -> Path:
    """The ``cifar-10-batches-py`` folder for ``root``: the folder that contains it, or the folder itself.

    A folder named something else counts as "itself" only when it already holds the batch files
    (a copy renamed by hand); otherwise ``root/cifar-10-batches-py`` is meant, existing or not.
    """
    root = Path(root).expanduser()
    if root.name == BATCH_DIR:
        return root
    if (root / TEST_FILE).is_file() and not (root / BATCH_DIR).exists():
        return root
    return root / BATCH_DIR


def require_batch_dir(root: str | Path) -> Path:
    """``root``'s batch dir, or a ``UserError`` that says which command makes it (missing or incomplete)."""
    folder = batch_dir(root)
    if not folder.is_dir():
        raise UserError(
            f"no CIFAR-10 data at {folder}: run `cifar-hpc data download --dir {folder.parent}` for the "
            f"real set, or `cifar-hpc data synth --dir {folder.parent}` for a small generated one"
        )
    missing = [name for name in DATA_FILES if not (folder / name).is_file()]
    if missing:
        raise UserError(
            f"{folder} is incomplete: missing {', '.join(missing)}; delete the folder and run "
            f"`cifar-hpc data download` (or `synth`) again"
        )
    return folder


def is_complete(folder: Path) -> bool:
    """Cheap: every data file is present. Batch dirs appear only by atomic rename, so present means complete."""
    return folder.is_dir() and all((folder / name).is_file() for name in DATA_FILES)


def is_generated(folder: Path) -> bool:
    """``write_synthetic`` wrote this folder (not CIFAR-10): only such a folder may be replaced."""
    return (folder / GENERATED_MARKER).exists()
