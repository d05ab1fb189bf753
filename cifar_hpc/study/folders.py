"""Which folders are studies and which are runs, from their files alone (nothing is read).

A **run folder** holds a ``config.json`` or a ``result.json`` (``cifar_hpc.training.results``). A
**study folder** holds a ``study.json`` (``cifar_hpc.study.manifest``) or run folders: ``submit``'s
``runs/<grid>/``, or a folder of plain ``cifar-hpc train`` runs. ``cifar_hpc.study.recorded`` reads them.
"""

from __future__ import annotations

from pathlib import Path

from cifar_hpc.base.errors import UserError
from cifar_hpc.study.manifest import STUDY_FILE
from cifar_hpc.training.results import CONFIG_FILE, RESULT_FILE


def is_run_folder(path: Path) -> bool:
    """``path`` is one run's folder: it holds its ``config.json`` or ``result.json``."""
    return path.is_dir() and ((path / RESULT_FILE).exists() or (path / CONFIG_FILE).exists())


def is_study_folder(path: Path) -> bool:
    """``path`` is a study's folder: it holds a ``study.json`` or run folders."""
    return path.is_dir() and ((path / STUDY_FILE).exists() or holds_runs(path))


def holds_runs(path: Path) -> bool:
    """Run folders stand directly in ``path`` (whatever else it holds)."""
    return any(map(is_run_folder, path.iterdir()))


def studies_below(path: Path) -> list[Path]:
    """The sub-folders of ``path`` that hold a ``study.json``, in name order."""
    return sorted(p for p in path.iterdir() if p.is_dir() and (p / STUDY_FILE).exists())


def check_study_folder(root: Path) -> None:
    """``UserError`` unless ``root`` is an existing folder that is not a single run's."""
    if not root.is_dir():
        raise UserError(f"{root} is not a folder" if root.exists() else f"{root} does not exist")
    if (root / RESULT_FILE).exists():
        raise UserError(f"{root} is a single run's folder; point at the study folder that holds it ({root.parent})")


def find_studies(path: str | Path) -> list[Path]:
    """``path`` itself when it is a study, else its sub-folders holding a ``study.json`` (``runs/``),
    else ``path`` when it holds plain run folders; ``UserError`` when it holds none of these."""
    path = Path(path)
    check_study_folder(path)
    if (path / STUDY_FILE).exists():
        return [path]
    studies = studies_below(path)
    if studies:
        return studies
    if holds_runs(path):
        return [path]
    raise UserError(f"{path} is not a study folder and holds none (no {STUDY_FILE}, no run folders)")


def folders_with_runs(path: str | Path) -> list[Path]:
    """Every folder where a run of ``path`` can be (``find_run`` looks in each): ``path`` itself when
    it is a study with a ``study.json``; else ``path`` when run folders stand in it (plain ``train
    --out`` runs, beside the studies) and each sub-folder that is a
    study folder, with or without ``study.json``. Wider than ``find_studies``, which lists the studies
    a status counts; ``UserError`` when there is no such folder."""
    path = Path(path)
    check_study_folder(path)
    if (path / STUDY_FILE).exists():
        return [path]
    found = ([path] if holds_runs(path) else []) + sorted(p for p in path.iterdir() if is_study_folder(p))
    if not found:
        raise UserError(f"{path} holds no runs and no studies (no {STUDY_FILE}, no run folders)")
    return found
