"""What data a run trained on: a short fingerprint of a data folder's kind and content.

A run's identity (``TrainConfig.run_id``) includes ``data.fingerprint``, so the same settings on
other data are another run: another folder, another W&B id, never "already completed" with the
old accuracy. The fingerprint is ``<kind>-<hash>``: ``cifar10`` or ``generated`` (the marker file
``data.write_synthetic`` leaves), then 16 hex digits of a BLAKE2b hash over every data file's name,
size and bytes. The path does not count: a staged copy on node-local scratch has the fingerprint
of its source.

Hashing all of CIFAR-10 (~180 MB) costs a fraction of a second (``bench``-free: it reads what
training loads anyway); it is computed once per folder and process and cached by the files' sizes
and modification times.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from cifar_hpc.base.errors import UserError
from cifar_hpc.data import layout

if TYPE_CHECKING:
    from cifar_hpc.config.train_config import TrainConfig

_CHUNK = 1 << 20


def fingerprint(root: str | Path) -> str:
    """``root``'s data fingerprint; ``UserError`` when it holds no complete dataset."""
    folder = layout.require_batch_dir(root).resolve()
    names = (*layout.DATA_FILES, layout.META_FILE)
    stats = tuple((name, *_size_and_mtime(folder / name)) for name in names)
    return _fingerprint(folder, stats, layout.is_generated(folder))


def _size_and_mtime(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return -1, 0  # batches.meta is optional: its absence is part of what is hashed
    return stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=32)
def _fingerprint(folder: Path, stats: tuple[tuple[str, int, int], ...], generated: bool) -> str:
    digest = hashlib.blake2b(digest_size=8)
    for name, size, _mtime in stats:
        digest.update(f"{name}\0{size}\0".encode())
        if size >= 0:
            with open(folder / name, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
    return f"{'generated' if generated else 'cifar10'}-{digest.hexdigest()}"


def with_fingerprint(cfg: TrainConfig, data_dir: str | Path | None = None) -> TrainConfig:
    """``cfg`` with ``data.fingerprint`` of the data at ``data_dir`` (default ``cfg.data.dir``).

    A config that already names a fingerprint (a submitted run) must match the data it finds: a
    folder whose content changed since submission is refused rather than trained under the old id.
    """
    found = fingerprint(data_dir if data_dir is not None else cfg.data.dir)
    claimed = cfg.data.fingerprint
    if claimed is None:
        return cfg.replace(data=dataclasses.replace(cfg.data, fingerprint=found))
    if claimed != found:
        raise UserError(
            f"the data at {data_dir or cfg.data.dir} (fingerprint {found}) is not the data run {cfg.run_id} "
            f"was set up with ({claimed}); was it replaced or regenerated since? Submit the run again"
        )
    return cfg
