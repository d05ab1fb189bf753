"""Which code this process runs: what ``submit`` records for a study and each run for itself.

A study's array tasks start hours after ``submit`` and, on bare metal, import whatever the checkout
holds then; this says what that was, so that a run trained on edited code is found out
(``cifar_hpc.study.code_version`` compares them). ``current()`` returns:

* ``id``: 12 hex of a SHA-256 over the package's source (every ``*.py`` under ``cifar_hpc/``, its
  path and bytes): what is compared. One id, one code, however it got there (checkout, wheel, copy).
* ``commit``: the git commit of the checkout the package sits in; None outside one (or without git).
* ``changes``: 12 hex of the package's uncommitted changes (``git diff HEAD`` and untracked files
  under the package); None when it has none or is not in a checkout.
* ``version``: ``cifar_hpc.__version__`` (what an installed wheel says).
* ``label``: for a reader: ``c59e73e``, ``c59e73e+changes 3f2a9c1d7e0b`` or ``0.1.0 (source d2e34b627d4d)``.

Imports nothing of the package but its version: training, study and submit all use it.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import cifar_hpc

PACKAGE_DIR = Path(cifar_hpc.__file__).resolve().parent
GIT_TIMEOUT_S = 10


def source_id(package_dir: Path = PACKAGE_DIR) -> str:
    """12 hex of a SHA-256 over every ``*.py`` below ``package_dir``: relative path and bytes, sorted."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def _git(package_dir: Path, *args: str) -> bytes | None:
    """``git -C package_dir ARGS``'s stdout; None when git is missing, fails, or this is no checkout."""
    try:
        done = subprocess.run(
            ["git", "-C", str(package_dir), *args], capture_output=True, timeout=GIT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _changes(package_dir: Path) -> str | None:
    """12 hex of the package's uncommitted changes (tracked diff and untracked files); None when clean."""
    diff = _git(package_dir, "diff", "HEAD", "--binary", "--", ".")
    untracked = _git(package_dir, "ls-files", "--others", "--exclude-standard", "-z", "--", ".")
    if diff is None or untracked is None:
        return None
    names = sorted(name for name in untracked.decode().split("\0") if name)
    if not diff and not names:
        return None
    digest = hashlib.sha256(diff)
    for name in names:  # paths relative to package_dir: git -C lists them so
        digest.update(name.encode() + b"\0")
        try:
            digest.update((package_dir / name).read_bytes())
        except OSError:
            pass  # removed while we looked
    return digest.hexdigest()[:12]


def current(package_dir: Path = PACKAGE_DIR) -> dict[str, Any]:
    """The code in ``package_dir`` now (read from disk: a process that imported it earlier may run
    older code; ``cifar_hpc.training.provenance`` takes this when the training modules are imported)."""
    ident = source_id(package_dir)
    # a copy inside some other repository (a venv in a checkout, ignored there) is not that checkout
    tracked = _git(package_dir, "ls-files", "--", "__init__.py")
    head = _git(package_dir, "rev-parse", "HEAD") if tracked else None
    commit = head.decode().strip() or None if head else None
    changes = _changes(package_dir) if commit else None
    return {
        "id": ident,
        "commit": commit,
        "changes": changes,
        "version": cifar_hpc.__version__,
        "label": label(commit, changes, cifar_hpc.__version__, ident),
    }


def label(commit: str | None, changes: str | None, version: str, ident: str) -> str:
    """What a reader sees of a code version: the commit (plus the changes' hash), else the version."""
    if commit is None:
        return f"{version} (source {ident})"
    return commit[:7] + (f"+changes {changes}" if changes else "")
