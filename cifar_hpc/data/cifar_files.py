"""CIFAR-10's on-disk format: the folder's layout, a checked reader, and a generated set written in it.

The format is the official ``cifar-10-batches-py/`` folder: ``data_batch_1..5`` and ``test_batch``
are pickled dicts with ``b"data"`` (uint8, N×3072: 1024 red, then 1024 green, then 1024 blue bytes,
each a row-major 32×32 plane) and ``b"labels"`` (N ints in 0..9), plus ``batches.meta``. What the
files hold, how to read them and how to write a generated set lives here (the folder layout, which
needs no numpy, in ``layout.py``); getting the real files
onto disk safely (download, the shared lock, staging to scratch) lives in ``fetch.py``, and
DataLoaders in ``loaders.py``.

A batch dir only ever appears complete, by an atomic rename (``fetch.swap_into_place``), so readers
never take a lock: "every data file is present" means "complete".
"""

from __future__ import annotations

import colorsys
import logging
import pickle
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cifar_hpc.base.errors import UserError
from cifar_hpc.data.fetch import data_lock, fresh_dir, make_data_dir, remove_orphans, swap_into_place
from cifar_hpc.data.layout import (
    BATCH_DIR,
    DATA_FILES,
    GENERATED_MARKER,
    META_FILE,
    TEST_FILE,
    TRAIN_FILES,
    batch_dir,
    is_generated,
    require_batch_dir,
)

log = logging.getLogger(__name__)

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

IMAGE_BYTES = 3 * 32 * 32
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


def load_cifar10(root: str | Path) -> CifarArrays:
    """Read the five training batches and the test batch, checking every file's structure.

    Any number of rows per file is accepted (generated sets are small). Raises ``UserError`` with
    one line naming the file and what is wrong.
    """
    folder = require_batch_dir(root)
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
    folder = require_batch_dir(root)
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


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that builds only what a CIFAR batch holds: dicts, lists, strings, ints, numpy arrays.

    Unpickling runs arbitrary code for any global it is asked to call, and data folders often sit
    on a shared filesystem that others can write to, so everything else is refused.
    """

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),  # how the official files (and write_synthetic) say it
            ("numpy._core.multiarray", "_reconstruct"),  # how NumPy 2 says it
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),  # how Python 3 writes bytes in a protocol-2 pickle ...
            ("__builtin__", "bytes"),  # ... and empty bytes
            ("builtins", "bytes"),
        }
    )

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
    make_data_dir(base)

    with data_lock(base, timeout_s=600):
        _refuse_real_data(target)  # someone may have downloaded the real set while we waited
        remove_orphans(base)
        rng = np.random.default_rng(seed)
        prototypes = _prototypes()
        n_train = len(TRAIN_FILES) * train_per_batch
        train_labels = rng.permutation(np.arange(n_train) % len(CLASSES))
        test_labels = rng.permutation(np.arange(test) % len(CLASSES))
        try:
            tmp = fresh_dir(base, f".{BATCH_DIR}.synth-")
            try:
                for i, name in enumerate(TRAIN_FILES):
                    labels = train_labels[i * train_per_batch : (i + 1) * train_per_batch]
                    _write_batch(
                        tmp / name,
                        _render(prototypes, labels, rng),
                        labels,
                        f"training batch {i + 1} of {len(TRAIN_FILES)}",
                    )
                _write_batch(
                    tmp / TEST_FILE, _render(prototypes, test_labels, rng), test_labels, "testing batch 1 of 1"
                )
                _write_pickle(
                    tmp / META_FILE,
                    {
                        b"num_cases_per_batch": train_per_batch,
                        b"label_names": [name.encode() for name in CLASSES],
                        b"num_vis": IMAGE_BYTES,
                    },
                )
                (tmp / GENERATED_MARKER).write_text(
                    "GENERATED data, not CIFAR-10: written by cifar_hpc.data.cifar_files.write_synthetic("
                    f"train_per_batch={train_per_batch}, test={test}, seed={seed}).\n"
                    "Each image is a per-class colour and pattern plus noise. Accuracies on it say nothing about "
                    "CIFAR-10; it exists to test the pipeline without a network.\n"
                )
                swap_into_place(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError as e:
            raise UserError(f"cannot write generated data under {base}: {e}") from None
    log.info("wrote GENERATED data (not CIFAR-10) to %s", target)
    return target


def _refuse_real_data(target: Path) -> None:
    if target.is_dir() and not is_generated(target) and any(target.iterdir()):
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
        v,  # airplane: dark top, bright bottom
        -v,  # automobile: bright top
        np.exp(-3 * r2),  # bird: bright centre
        -np.exp(-3 * r2),  # cat: dark centre
        np.cos(np.pi * u),  # deer: bright middle column
        np.cos(np.pi * v),  # dog: bright middle row
        u**2 - v**2,  # frog: bright sides
        v**2 - u**2,  # horse: bright top and bottom
        np.cos(2.5 * np.pi * np.sqrt(r2)),  # ship: rings
        np.abs(u) * v,  # truck: bright bottom corners, dark top corners
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
    _write_pickle(
        path,
        {
            b"batch_label": batch_label.encode(),
            b"labels": [int(label) for label in labels],  # a plain list, as in the official files
            b"data": data,
            b"filenames": [f"generated_{CLASSES[label]}_{i:05d}.png".encode() for i, label in enumerate(labels)],
        },
    )


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
