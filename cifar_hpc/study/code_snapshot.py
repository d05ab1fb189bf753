"""A copy of the package per submission, so that editing the checkout never changes a queued run.

On bare metal an array task imports ``cifar_hpc`` when it starts, hours after ``submit`` maybe; without
a copy it trains whatever the checkout holds then (``cifar_hpc.study.code_version`` flags it
afterwards). With the profile's ``code_snapshot`` (the default), ``submit`` copies the package's
``*.py`` files into ``<study>/code/<id>/cifar_hpc`` (``id``: ``cifar_hpc.base.code_identity.source_id``
of the copy, so one code is copied once however often it is submitted) and the jobs put that folder
first on ``PYTHONPATH``: it shadows a checkout, an editable install or a wheel alike. Inside a
container the image froze the code when it was built; no copy is made there.
"""

from __future__ import annotations

import os
import shlex
import shutil
import uuid
from pathlib import Path

from cifar_hpc.base import code_identity

SNAPSHOTS = "code"
"""The study's sub-folder holding its code snapshots, one per code id."""


def snapshot_path(study_folder: Path, ident: str) -> Path:
    """The folder that goes on the jobs' ``PYTHONPATH`` for the code ``ident`` (it holds ``cifar_hpc/``)."""
    return study_folder / SNAPSHOTS / ident


def planned_snapshot(study_folder: Path) -> Path:
    """Where a submission now would copy the package (for a dry run's script: nothing is written)."""
    return snapshot_path(study_folder, code_identity.source_id())


def snapshot_code(study_folder: Path, package_dir: Path = code_identity.PACKAGE_DIR) -> Path:
    """The package's source copied under the study (reused when that code is there already); returns the
    folder for ``PYTHONPATH``. Copied to a temporary name and renamed: a half-written copy is never used."""
    part = study_folder / SNAPSHOTS / f".part-{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(package_dir, part / "cifar_hpc", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        final = snapshot_path(study_folder, code_identity.source_id(part / "cifar_hpc"))
        if final.exists():  # this code was submitted before: the copy made then is the same files
            return final
        os.replace(part, final)
        return final
    finally:
        shutil.rmtree(part, ignore_errors=True)


def python_path_line(snapshot: Path) -> str:
    """The job's set-up line that makes its Python import the snapshot first."""
    return f"export PYTHONPATH={shlex.quote(str(snapshot))}${{PYTHONPATH:+:$PYTHONPATH}}"
