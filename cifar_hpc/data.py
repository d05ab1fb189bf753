"""CIFAR-10 on disk: download once per cluster, verify, load, stage to node-local scratch, or generate.

The on-disk format is the official ``cifar-10-batches-py/`` folder: ``data_batch_1..5`` and
``test_batch`` are pickled dicts with ``b"data"`` (uint8, N×3072: 1024 red, then 1024 green, then
1024 blue bytes, each a row-major 32×32 plane) and ``b"labels"`` (N ints in 0..9), plus
``batches.meta``. Everything that reads or writes that folder lives here; DataLoaders live in
``loaders.py``.

Concurrency is the point of most of this file. A Slurm array starts hundreds of tasks at once on a
shared filesystem (NFS, Lustre) where ``fcntl`` locks may not work, so:

- a batch dir only ever appears by an atomic ``rename`` of a complete folder, so "the folder is
  there" means "the folder is complete" and readers never take a lock;
- writers (``download``, ``write_synthetic``) serialise on a ``SoftFileLock`` (an ``O_EXCL`` lock
  file, which NFS and Lustre honour) and re-check under it, so exactly one of them does the work;
- every temporary name is unique per host and process, and is cleaned up by whoever next holds
  the lock if its writer was killed.
"""

from __future__ import annotations

import colorsys
import hashlib
import http.client
import logging
import os
import pickle
import secrets
import shutil
import socket
import struct
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import filelock
import numpy as np

from cifar_hpc.errors import UserError

log = logging.getLogger(__name__)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
BATCH_DIR = "cifar-10-batches-py"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
GENERATED_MARKER = "GENERATED"
"""File inside ``BATCH_DIR`` written by ``write_synthetic``: its presence means "not CIFAR-10"."""

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
DATA_FILES = (*TRAIN_FILES, TEST_FILE)
LOCK_NAME = f"{ARCHIVE_NAME}.lock"
"""The one lock, beside the batch dir, that every writer of that dir (download or synth) takes."""

IMAGE_BYTES = 3 * 32 * 32
_CHUNK = 1 << 20  # bytes per read while downloading and hashing
_HTTP_TIMEOUT_S = 60.0  # per socket operation, not for the whole download
_STAGE_LOCK_TIMEOUT_S = 600.0
# The generated set's knobs, in grey levels (0..255). Measured with them: a nearest-class-mean
# classifier scores 100% on clean and ~88% on cropped+flipped+rotated test images, and a ResNet-18
# trained 2 epochs (20 steps) on 300 images scores 80-100% with batch-statistics BN; eval-mode BN
# after so few steps lags (20-50%), which is about BN's running averages, not the data.
_NOISE = 40.0  # σ of the per-pixel Gaussian noise
_PATTERN = 30.0  # standard deviation of each class's luminance pattern
_SATURATION, _VALUES = 0.6, (0.85, 0.6)  # HSV saturation and value of the class colours (value alternates)


@dataclass(frozen=True, eq=False)  # eq=False: comparing numpy arrays with == gives arrays, not a bool
class CifarArrays:
    """The whole dataset in memory, as CIFAR stores it."""

    train_x: np.ndarray
    """uint8 (N, 3, 32, 32), channel planes R, G, B."""
    train_y: np.ndarray
    """int64 (N,), class index into ``CLASSES``."""
    test_x: np.ndarray
    """uint8 (M, 3, 32, 32)."""
    test_y: np.ndarray
    """int64 (M,)."""
    generated: bool
    """True when the folder came from ``write_synthetic`` (``GENERATED_MARKER`` present)."""

    @property
    def kind(self) -> str:
        return "generated" if self.generated else "cifar10"


# ---------------------------------------------------------------------------------------------
# Reading


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


def load_cifar10(root: str | Path) -> CifarArrays:
    """Read the five training batches and the test batch, checking every file's structure.

    Any number of rows per file is accepted (generated sets are small). Raises ``UserError`` with
    one line naming the file and what is wrong.
    """
    folder = _require_batch_dir(root)
    train = [_read_batch(folder / name) for name in TRAIN_FILES]
    test_x, test_y = _read_batch(folder / TEST_FILE)
    train_x = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])
    if len(train_y) == 0:
        raise UserError(f"{folder}: the training batches hold no images")
    if len(test_y) == 0:
        raise UserError(f"{folder / TEST_FILE}: the test batch holds no images")
    return CifarArrays(
        # (N, 3072) -> (N, 3, 32, 32) is a free view: rows are already R, G, B planes, row-major.
        train_x=train_x.reshape(-1, 3, 32, 32),
        train_y=train_y,
        test_x=test_x.reshape(-1, 3, 32, 32),
        test_y=test_y,
        generated=(folder / GENERATED_MARKER).exists(),
    )


def verify(root: str | Path) -> Path:
    """Cheap check that ``root`` holds a dataset (real or generated); return its batch dir.

    Every data file must be present and start like a pickle. It reads a few bytes per file, not
    the 180 MB that ``load_cifar10`` reads and checks in full: each array task calls this before
    staging, and the shared filesystem should not serve the dataset twice per task.
    """
    folder = _require_batch_dir(root)
    for name in DATA_FILES:
        path = folder / name
        try:
            with open(path, "rb") as f:
                head = f.read(2)
        except OSError as e:
            raise UserError(f"{path}: cannot read: {e.strerror or e}") from None
        # Protocol 2+ pickles start with PROTO (0x80); protocol 0/1 dicts with "(" or "}".
        if not head or head[:1] not in (b"\x80", b"(", b"}"):
            raise UserError(f"{path}: not a pickle (starts with {head!r}); the data folder is corrupt")
    return folder


def _require_batch_dir(root: str | Path) -> Path:
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


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that builds only what a CIFAR batch holds: dicts, lists, strings, ints, numpy arrays.

    Unpickling runs arbitrary code for any global it is asked to call, and data folders often sit
    on a shared filesystem that others can write to, so everything else is refused.
    """

    _ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"),  # how the official files (and write_synthetic) say it
        ("numpy._core.multiarray", "_reconstruct"),  # how NumPy 2 says it
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes in a protocol-2 pickle ...
        ("__builtin__", "bytes"),  # ... and empty bytes
        ("builtins", "bytes"),
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}, which a CIFAR batch never holds")
        return super().find_class(module, name)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (uint8 (N, 3072), int64 (N,))."""
    try:
        with open(path, "rb") as f:
            # encoding="bytes": the official files were written by Python 2, whose str becomes bytes.
            batch = _BatchUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise UserError(f"{path}: file missing; the data folder is incomplete") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - a corrupt pickle can raise almost anything (EOFError, KeyError, ...)
        raise UserError(
            f"{path}: not a readable CIFAR batch pickle (truncated or corrupt?): {type(e).__name__}: {e}"
        ) from None
    if not isinstance(batch, dict):
        raise UserError(f"{path}: not a CIFAR batch: holds a {type(batch).__name__}, expected a dict")
    entries = {(key.decode("latin1") if isinstance(key, bytes) else key): value for key, value in batch.items()}
    if "data" not in entries or "labels" not in entries:
        keys = ", ".join(sorted(map(str, entries))) or "none"
        raise UserError(f"{path}: not a CIFAR-10 batch: needs 'data' and 'labels' entries, has {keys}")

    data = entries["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != IMAGE_BYTES:
        got = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise UserError(f"{path}: 'data' must be a uint8 array of shape (N, {IMAGE_BYTES}), got a {got}")
    try:
        labels = np.asarray(entries["labels"])
    except (ValueError, TypeError):  # ragged lists and the like
        raise UserError(f"{path}: 'labels' is not a flat list of integers") from None
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise UserError(f"{path}: 'labels' must be a flat list of integers, got {labels.dtype} of shape {labels.shape}")
    if len(labels) != len(data):
        raise UserError(f"{path}: {len(labels)} labels for {len(data)} images")
    bad = np.flatnonzero((labels < 0) | (labels >= len(CLASSES)))
    if bad.size:
        raise UserError(
            f"{path}: label {labels[bad[0]]} at row {bad[0]} is outside 0..{len(CLASSES) - 1} "
            f"({bad.size} such labels); is this CIFAR-100?"
        )
    return data, labels.astype(np.int64)


def _is_complete(folder: Path) -> bool:
    """Cheap: every data file is present. Batch dirs appear only by atomic rename, so present means complete."""
    return folder.is_dir() and all((folder / name).is_file() for name in DATA_FILES)


def _is_generated(folder: Path) -> bool:
    return (folder / GENERATED_MARKER).exists()


# ---------------------------------------------------------------------------------------------
# Writing: the generated set


def write_synthetic(root: str | Path, *, train_per_batch: int = 1000, test: int = 1000, seed: int = 0) -> Path:
    """Write a learnable generated dataset in CIFAR-10's exact on-disk format; return the batch dir.

    Each class has a prototype image, a distinct mean colour plus a smooth pattern, and each image
    is its class prototype plus Gaussian pixel noise, so a ResNet learns it in an epoch or two.
    The patterns are symmetric under horizontal flips and vary over half an image or more, so
    they survive crop-with-padding, flips and small rotations. Classes are balanced (counts differ
    by at most one); the content depends only on the arguments. The folder is marked with
    ``GENERATED_MARKER`` so nothing downstream mistakes it for CIFAR-10.

    Written beside the target and renamed into place. An older generated folder is replaced; real
    CIFAR-10 (no marker) never is.
    """
    if train_per_batch < 1 or test < 1:
        raise UserError(f"need at least one image per batch, got train_per_batch={train_per_batch}, test={test}")
    target = batch_dir(root)
    base = target.parent
    _refuse_real_data(target)
    _mkdir(base)

    with _data_lock(base, timeout_s=600):
        _refuse_real_data(target)  # someone may have downloaded the real set while we waited
        _remove_orphans(base)
        rng = np.random.default_rng(seed)
        prototypes = _prototypes()
        n_train = len(TRAIN_FILES) * train_per_batch
        train_labels = rng.permutation(np.arange(n_train) % len(CLASSES))
        test_labels = rng.permutation(np.arange(test) % len(CLASSES))
        try:
            tmp = _fresh_dir(base, f".{BATCH_DIR}.synth-")
            try:
                for i, name in enumerate(TRAIN_FILES):
                    labels = train_labels[i * train_per_batch:(i + 1) * train_per_batch]
                    _write_batch(tmp / name, _render(prototypes, labels, rng), labels,
                                 f"training batch {i + 1} of {len(TRAIN_FILES)}")
                _write_batch(tmp / TEST_FILE, _render(prototypes, test_labels, rng), test_labels,
                             "testing batch 1 of 1")
                _write_pickle(tmp / META_FILE, {
                    b"num_cases_per_batch": train_per_batch,
                    b"label_names": [name.encode() for name in CLASSES],
                    b"num_vis": IMAGE_BYTES,
                })
                (tmp / GENERATED_MARKER).write_text(
                    "GENERATED data, not CIFAR-10: written by cifar_hpc.data.write_synthetic("
                    f"train_per_batch={train_per_batch}, test={test}, seed={seed}).\n"
                    "Each image is a per-class colour and pattern plus noise. Accuracies on it say nothing about "
                    "CIFAR-10; it exists to test the pipeline without a network.\n"
                )
                _swap_into_place(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError as e:
            raise UserError(f"cannot write generated data under {base}: {e}") from None
    log.info("wrote GENERATED data (not CIFAR-10) to %s", target)
    return target


def _refuse_real_data(target: Path) -> None:
    if target.is_dir() and not _is_generated(target) and any(target.iterdir()):
        raise UserError(
            f"{target} holds data that write_synthetic did not write (no {GENERATED_MARKER} file), "
            "probably real CIFAR-10; refusing to overwrite it: write the generated set to another folder"
        )


def _prototypes() -> np.ndarray:
    """float32 (10, 3, 32, 32) class prototypes in 0..255: a mean colour plus a smooth pattern each.

    Colours: hues 36° apart with alternating brightness, so neighbours in hue differ in value too.
    Patterns: functions of |x| and y around the centre, hence unchanged by a horizontal flip, and
    so smooth that a 4-pixel shift or a 15° turn keeps most of their correlation.
    """
    u, v = np.meshgrid((np.arange(32) - 15.5) / 16, (np.arange(32) - 15.5) / 16)  # u: across, v: down, in [-1, 1]
    r2 = u**2 + v**2
    patterns = [
        v,                       # airplane: dark top, bright bottom
        -v,                      # automobile: bright top
        np.exp(-3 * r2),         # bird: bright centre
        -np.exp(-3 * r2),        # cat: dark centre
        np.cos(np.pi * u),       # deer: bright middle column
        np.cos(np.pi * v),       # dog: bright middle row
        u**2 - v**2,             # frog: bright sides
        v**2 - u**2,             # horse: bright top and bottom
        np.cos(2.5 * np.pi * np.sqrt(r2)),  # ship: rings
        np.abs(u) * v,           # truck: bright bottom corners, dark top corners
    ]
    out = np.empty((len(CLASSES), 3, 32, 32), np.float32)
    for k, pattern in enumerate(patterns):
        pattern = (pattern - pattern.mean()) / pattern.std()
        colour = np.array(colorsys.hsv_to_rgb(k / len(CLASSES), _SATURATION, _VALUES[k % 2])) * 255
        out[k] = colour[:, None, None] + _PATTERN * pattern[None]  # same pattern on all channels (a luminance change)
    return out


def _render(prototypes: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 (N, 3072) rows: prototype + Gaussian noise (σ = ``_NOISE``), rounded and clipped."""
    images = prototypes[labels] + _NOISE * rng.standard_normal((len(labels), 3, 32, 32), dtype=np.float32)
    return np.clip(np.rint(images), 0, 255).astype(np.uint8).reshape(len(labels), IMAGE_BYTES)


def _write_batch(path: Path, data: np.ndarray, labels: np.ndarray, batch_label: str) -> None:
    _write_pickle(path, {
        b"batch_label": batch_label.encode(),
        b"labels": [int(label) for label in labels],  # a plain list, as in the official files
        b"data": data,
        b"filenames": [f"generated_{CLASSES[label]}_{i:05d}.png".encode() for i, label in enumerate(labels)],
    })


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler: only it lets us choose the opcodes
    """Pickles like the Python 2 cPickle that wrote the official files.

    Two differences from ``pickle.dump(protocol=2)`` matter to readers: every bytes object is a
    Python 2 ``str`` (so ``encoding="bytes"`` gives ``b"data"`` keys and ``encoding="latin1"`` gives
    ``"data"``, exactly as with the real files), and arrays refer to ``numpy.core.multiarray``,
    which NumPy 1 and 2 both read, where NumPy 2 alone would write ``numpy._core``, which NumPy 1
    cannot import (numpy/numpy#28340): a container's older NumPy can read what the login node wrote.
    """

    dispatch = pickle._Pickler.dispatch.copy()
    _reconstruct = np.empty(0, np.uint8).__reduce__()[0]

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if obj is self._reconstruct:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def _write_pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def _swap_into_place(new: Path, target: Path) -> None:
    """Rename the complete folder ``new`` to ``target``, replacing a generated folder there.

    A directory cannot be renamed over a non-empty one, so an old folder is first renamed aside:
    for that instant ``target`` is missing (a reader gets "no data", never a mix of old and new).
    """
    aside = None
    if target.exists():
        aside = target.with_name(f".{target.name}.old-{_host_pid()}")
        os.rename(target, aside)
    os.rename(new, target)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Download


def download(
    root: str | Path,
    *,
    url: str = CIFAR10_URL,
    md5: str = CIFAR10_MD5,
    lock_timeout_s: float = 3600,
    progress: bool = False,
) -> Path:
    """Make sure ``root`` holds the real CIFAR-10 batch dir, downloading it if needed; return the dir.

    Safe to call from every task of an array at once on a shared filesystem: the first to take the
    lock downloads (checksum verified while streaming) and extracts beside the target, then renames
    into place; the others wait and find the dir done. A generated folder at the target is
    replaced by the real data.

    The verified archive is kept as ``root/cifar-10-python.tar.gz``: compute nodes often have no
    internet, and with the archive kept a deleted batch dir is rebuilt offline (170 MB of disk is
    cheaper than a failed array). An archive already there (ours, or one copied in by hand for an
    offline cluster) is checked against ``md5`` and used; if it does not match, the call fails and
    says so rather than deleting it: ours only ever arrive under that name after the check, so a
    bad one was put there by someone, who should decide what to do with it.
    """
    target = batch_dir(root)
    base = target.parent
    if _is_complete(target) and not _is_generated(target):
        return target  # the fast path for the 999 array tasks that come after the first
    md5 = md5.strip().lower()
    _mkdir(base)

    with _data_lock(base, timeout_s=lock_timeout_s):
        if _is_complete(target) and not _is_generated(target):
            log.info("CIFAR-10 already at %s (another job fetched it while this one waited)", target)
            return target
        if target.is_dir() and not _is_generated(target) and any(target.iterdir()):
            missing = ", ".join(name for name in DATA_FILES if not (target / name).is_file())
            raise UserError(f"{target} exists but is incomplete (missing {missing}); delete it and run again")
        _remove_orphans(base)
        archive = base / ARCHIVE_NAME
        if archive.exists():
            got = _md5_of(archive)
            if got != md5:
                raise UserError(
                    f"{archive} exists but its checksum does not match (expected {md5} got {got}): it is "
                    "truncated or not the CIFAR-10 archive; delete it and run again"
                )
            log.info("using the verified archive already at %s", archive)
        else:
            _fetch(url, md5, archive, progress=progress)
        _extract(archive, target)
    log.info("CIFAR-10 ready at %s", target)
    return target


def _fetch(url: str, md5: str, archive: Path, *, progress: bool) -> None:
    """Stream ``url`` to a temp file beside ``archive``, hashing as it goes; rename it in if the md5 matches."""
    part = archive.with_name(f"{archive.name}.part-{_host_pid()}")
    log.info("downloading %s", url)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "cifar-hpc (python urllib)"})
        with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT_S) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            digest = hashlib.md5(usedforsecurity=False)  # FIPS-mode clusters refuse md5 "for security"
            done, reported = 0, 0
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress and done - reported >= max(total // 10, 16 * _CHUNK):
                    reported = done
                    log.info("downloaded %d MB%s", done >> 20, f" of {total >> 20} MB" if total else "")
            out.flush()
            os.fsync(out.fileno())  # the rename below must not publish data still in this node's cache
        got = digest.hexdigest()
        if got != md5:
            raise UserError(f"checksum mismatch for {url}: expected {md5} got {got} ({done} bytes); nothing was kept")
        os.replace(part, archive)
    except urllib.error.HTTPError as e:
        raise UserError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise UserError(
            f"download of {url} failed: {e.reason}; compute nodes often have no internet: "
            "run `cifar-hpc data download` on a login node first"
        ) from None
    except (OSError, ValueError, http.client.HTTPException) as e:  # ValueError: a malformed URL
        raise UserError(f"download of {url} failed: {e}") from None
    finally:
        part.unlink(missing_ok=True)


def _extract(archive: Path, target: Path) -> None:
    """Unpack ``archive`` into a temp dir beside ``target`` and rename its batch dir into place."""
    try:
        tmp = _fresh_dir(target.parent, f".{BATCH_DIR}.extract-")
    except OSError as e:
        raise UserError(f"cannot extract {archive} into {target.parent}: {e}") from None
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                _safe_extractall(tar, tmp)
        except (tarfile.TarError, OSError, EOFError) as e:
            raise UserError(f"cannot extract {archive}: {e}") from None
        extracted = tmp / BATCH_DIR
        if not _is_complete(extracted):
            raise UserError(f"{archive} does not hold {BATCH_DIR}/ with {', '.join(DATA_FILES)}")
        try:
            _swap_into_place(extracted, target)
        except OSError as e:
            raise UserError(f"cannot move the extracted data to {target}: {e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _safe_extractall(tar: tarfile.TarFile, dest: Path) -> None:
    if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4: refuses links out, absolute paths, devices
        tar.extractall(dest, filter="data")
        return
    for member in tar.getmembers():  # older Pythons: the same refusals, by hand
        parts = Path(member.name).parts
        if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
            raise UserError(f"refusing to extract {member.name!r}: the archive is not the CIFAR-10 archive")
    tar.extractall(dest)


def _md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Locking and temp files


def _data_lock(base: Path, *, timeout_s: float) -> _DataLock:
    return _DataLock(base / LOCK_NAME, timeout_s)


class _DataLock:
    """The data folder's SoftFileLock, turning a wait timeout into a ``UserError`` that says what to do."""

    def __init__(self, path: Path, timeout_s: float) -> None:
        self.path = path
        self.timeout_s = timeout_s
        # SoftFileLock = an O_EXCL marker file, which NFS and Lustre honour where fcntl locks may not.
        # Its drawback: a job killed while holding it leaves the file behind (filelock breaks it only
        # when the dead holder ran on the same host), hence the advice in the timeout message.
        self.lock = filelock.SoftFileLock(str(path), timeout=timeout_s)

    def __enter__(self) -> None:
        try:
            self.lock.acquire()
        except filelock.Timeout:
            raise UserError(
                f"waited {self.timeout_s:g} s for the lock {self.path}: another job is still writing the data, "
                "or one was killed while doing so; if no job is running, delete that file and try again"
            ) from None
        except OSError as e:
            raise UserError(f"cannot create the lock file {self.path}: {e}") from None

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def _remove_orphans(base: Path) -> None:
    """Delete temp files and folders left by killed writers. Only call while holding the data lock:
    then no writer is alive, so every temp name is an orphan."""
    for path in [*base.glob(f"{ARCHIVE_NAME}.part-*"), *base.glob(f".{BATCH_DIR}.*")]:
        log.info("removing %s, left by an interrupted job", path)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _fresh_dir(parent: Path, prefix: str) -> Path:
    """A new, uniquely named folder. Unlike ``tempfile.mkdtemp`` (mode 0700) it gets the umask's usual
    mode, because it is renamed into place and must end up readable by whoever reads the data."""
    path = parent / f"{prefix}{_host_pid()}-{secrets.token_hex(4)}"
    path.mkdir()
    return path


def _host_pid() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the data folder {path}: {e}") from None


# ---------------------------------------------------------------------------------------------
# Staging to node-local scratch


def stage_to_scratch(src: str | Path, *, scratch: str | None = None) -> Path:
    """Copy the batch dir to node-local scratch once per node; return the copy's batch dir.

    ``scratch`` defaults to ``$SLURM_TMPDIR``, then ``$TMPDIR``; with neither, or when ``src`` is
    already under scratch, or when copying fails (full disk, permissions: logged as a warning),
    the source batch dir is returned and training reads the shared filesystem instead.

    The copy lives at ``<scratch>/cifar-hpc-data/<key>/cifar-10-batches-py``, where ``key`` hashes
    the source's path and its files' sizes and modification times: a re-downloaded or regenerated
    source gets a fresh copy, an unchanged one is reused. Processes on one node stage together
    under a lock in scratch (node-local, so an ordinary ``FileLock`` works); the copy is written to
    a temp name and renamed, so no process ever reads half a copy.
    """
    source = _require_batch_dir(src)
    scratch = scratch or os.environ.get("SLURM_TMPDIR") or os.environ.get("TMPDIR")
    if not scratch:
        return source
    scratch_root = Path(scratch).expanduser().resolve()
    if source.resolve().is_relative_to(scratch_root):
        return source  # already on scratch: copying would only duplicate it

    files = sorted(p for p in source.iterdir() if p.is_file())
    key = hashlib.sha256(str(source.resolve()).encode())
    for path in files:
        stat = path.stat()
        key.update(f"\0{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    home = scratch_root / "cifar-hpc-data" / key.hexdigest()[:16]
    target = home / BATCH_DIR
    if _is_complete(target):
        return target
    try:
        home.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(str(home.with_name(home.name + ".lock")), timeout=_STAGE_LOCK_TIMEOUT_S):
            if _is_complete(target):
                return target
            for orphan in home.glob(".staging-*"):  # left by a process killed mid-copy; we hold the lock
                shutil.rmtree(orphan, ignore_errors=True)
            tmp = _fresh_dir(home, ".staging-")
            try:
                for path in files:
                    shutil.copyfile(path, tmp / path.name)
                os.rename(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except (OSError, filelock.Timeout) as e:
        log.warning("could not stage %s to %s (%s); reading it from where it is", source, home, e)
        return source
    log.info("staged %s to %s", source, target)
    return target
