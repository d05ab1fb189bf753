"""Checkpoints that survive a full disk or a kill mid-save, and the choice of the one a run resumes from.

Lightning 2.6 (``lightning.fabric.utilities.cloud_io._atomic_save``) writes a local checkpoint through
an fsspec transaction: a temp file in the system temp folder, *moved* onto the target on commit. Across
filesystems that move is a copy, so a full disk left ``last.ckpt`` at 67 of 89 MB, and every later
attempt failed in torch's loader ("failed finding central directory"), naming no file.

:class:`AtomicCheckpointIO` writes a temp file next to the target instead, fsyncs it and renames it
over the target: the target is always either the previous complete checkpoint or the new complete one,
and a failed write frees its space at once. :func:`resume_checkpoint` picks what a (re)started attempt
resumes from, checking each candidate first, and says in one line what it skipped and why.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
"""A run's checkpoints: ``<out>/checkpoints/``."""
SUFFIX = ".ckpt"  # Lightning's ModelCheckpoint.FILE_EXTENSION
LAST_NAME = "last"  # ModelCheckpoint filename (Lightning adds SUFFIX)
LAST_CKPT = LAST_NAME + SUFFIX
"""The newest training state, written by time and at the end of fit: what a requeued run resumes from."""
BEST_PREFIX = "best-"
SWA_CKPT = "swa" + SUFFIX
"""The averaged weights an SWA run is tested with (written after fit)."""
RUN_KEY = "cifar_hpc"
"""Top-level checkpoint key the plugin adds: ``{"run_id": ...}``, the run the checkpoint belongs to."""
TMP_MARK = ".tmp-"
_MB = 1e6

_NO_ROOM = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EFBIG: "file too large"}


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, quota, ...). Its temp file is removed and the
    previous checkpoint at the same path is untouched. ``errno`` is the cause's (``ENOSPC`` for a full disk)."""

    def __init__(self, path: Path, written: int, total: int, cause: OSError) -> None:
        reason = _NO_ROOM.get(cause.errno, cause.strerror or str(cause))
        self.message = f"{reason} while writing checkpoint {path} ({written / _MB:.1f} of {total / _MB:.1f} MB written)"
        if path.exists():
            self.message += "; the previous checkpoint there is kept"
        super().__init__(cause.errno, self.message)
        self.filename = str(path)
        self.disk_full = cause.errno in (errno.ENOSPC, errno.EDQUOT)

    def __str__(self) -> str:
        return self.message


def temp_path(target: Path) -> Path:
    """Where a save of ``target`` writes first: the same folder, hence the same filesystem (rename is atomic)."""
    return target.with_name(f".{target.name}{TMP_MARK}{os.getpid()}")


def write_atomic(target: Path, payload: bytes | memoryview) -> None:
    """Write ``payload`` to ``target`` so that ``target`` holds either its old content or all of the new.

    temp file in the target's folder -> flush + fsync -> ``os.replace`` -> fsync of the folder (so that
    the rename itself survives a node crash). On any error the temp file is removed; errors that are
    about room on the disk become :class:`CheckpointWriteError` naming ``target``."""
    tmp = temp_path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            handle.write(payload)
            # network filesystems may report a full disk only at fsync or close: both inside this try
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as error:
        written = tmp.stat().st_size if tmp.exists() else 0
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno in _NO_ROOM:
            raise CheckpointWriteError(target, written, len(payload), error) from error
        raise
    _fsync_folder(target.parent)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a folder; the rename has happened all the same
        pass
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, written atomically in the checkpoint's own folder and stamped
    with the run id (``checkpoint["cifar_hpc"]["run_id"]``). Remote URLs keep Lightning's behaviour.

    Pass it to the Trainer: ``pl.Trainer(plugins=[AtomicCheckpointIO(run_id=cfg.run_id), ...])``."""

    def __init__(self, run_id: str | None = None) -> None:
        super().__init__()
        self.run_id = run_id

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if self.run_id is not None:
            checkpoint = {**checkpoint, RUN_KEY: {"run_id": self.run_id}}
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)  # remote, or its TypeError
            return
        target = Path(path)
        # serialised in memory first (as Lightning does): torch.save streaming to a file turns a full
        # disk into "RuntimeError: unexpected pos 704 vs 598", and a pickling error then touches no file
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_atomic(target, buffer.getbuffer())


# --- which checkpoint to resume from -----------------------------------------------------------


@dataclass(frozen=True)
class _Verdict:
    path: Path
    problem: str | None  # None: a complete checkpoint of this run
    global_step: int = -1


def check_checkpoint(path: Path, run_id: str | None) -> _Verdict:
    """Is ``path`` a complete checkpoint of run ``run_id``? The zip's central directory and every
    member's CRC (about 55 ms for 89 MB, warm), then torch's own reading of its metadata with the
    tensors memory-mapped, not read (about 10 ms). A checkpoint without a run id is accepted."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        size = path.stat().st_size if path.exists() else 0
        return _Verdict(path, f"is truncated or corrupt (not a complete zip, {size / _MB:.1f} MB: {error})")
    if bad is not None:
        return _Verdict(path, f"is corrupt (CRC mismatch in {bad})")
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as error:  # what torch cannot read, Lightning's resume cannot either
        return _Verdict(path, f"cannot be read by torch ({type(error).__name__}: {error})")
    if not isinstance(checkpoint, dict):
        return _Verdict(path, "is not a Lightning checkpoint")
    owner = checkpoint_run_id(checkpoint)
    if run_id is not None and owner is not None and owner != run_id:
        return _Verdict(path, f"belongs to run {owner}, not {run_id}")
    return _Verdict(path, None, int(checkpoint.get("global_step", -1)))


def checkpoint_run_id(checkpoint: dict[str, Any]) -> str | None:
    """The run a loaded checkpoint belongs to: the plugin's stamp, else the module's hyperparameters
    (checkpoints written before the stamp existed), else None."""
    stamp = checkpoint.get(RUN_KEY)
    if isinstance(stamp, dict) and stamp.get("run_id"):
        return str(stamp["run_id"])
    hparams = checkpoint.get("hyper_parameters")
    if isinstance(hparams, dict) and hparams.get("run_id"):
        return str(hparams["run_id"])
    return None


def remove_partial_saves(folder: Path) -> list[Path]:
    """Remove temp files that a killed save left behind (call before training: nothing saves then)."""
    removed = []
    for tmp in sorted(folder.glob(f".*{TMP_MARK}*")):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def resume_checkpoint(out_dir: Path, run_id: str | None, say: Callable[[str], None] = log.warning) -> Path | None:
    """The checkpoint a (re)started run resumes from, or None for a fresh start.

    Candidates: ``checkpoints/last.ckpt`` and ``checkpoints/best-*.ckpt`` (both hold the full training
    state). Of the valid ones (:func:`check_checkpoint`), the furthest trained wins, ``last.ckpt`` on a
    tie: a best checkpoint is newer only when its save succeeded and last.ckpt's then failed. Says ONE
    line when it passes over a file (naming each and why) or resumes from anything but ``last.ckpt``;
    nothing on a plain resume or a first start. Call it on every rank: all see the same files."""
    folder = Path(out_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return None
    for tmp in remove_partial_saves(folder):
        log.info("removed %s, left by a save that was cut short", tmp)
    last = folder / LAST_CKPT
    bests = sorted(folder.glob(f"{BEST_PREFIX}*{SUFFIX}"), key=lambda p: p.stat().st_mtime, reverse=True)
    candidates = ([last] if last.exists() else []) + bests
    if not candidates:
        return None
    verdicts = [check_checkpoint(path, run_id) for path in candidates]
    valid = [v for v in verdicts if v.problem is None]
    pick = max(valid, key=lambda v: (v.global_step, v.path == last), default=None)
    notes = [f"{v.path} {v.problem}" for v in verdicts if v.problem is not None]
    if not last.exists():
        notes.insert(0, f"{last} is missing")
    if notes or (pick is not None and pick.path != last):
        then = f"resuming from {pick.path}" if pick else "starting fresh"
        say(f"{'; '.join(notes) or f'{pick.path} is newer than {last}'}; {then}")
    return pick.path if pick else None
