"""A run by id: the one lookup of ``logs``, ``train --from-run`` and ``collect --plot-gpu``, and the
completed copies of a run in other studies (``submit`` and ``train --from-run`` say so).

A run is named by its id, the start of its id, or ``STUDY/ID`` (``STUDY`` the study folder's path
below the results folder, e.g. ``ablation``). The run id is its settings' hash, so the same settings
submitted to two studies (or a study copied) give one id but two runs, each with its own folder,
log and result: two candidates, ``a/<id>`` and ``b/<id>``, never one chosen for the user.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from cifar_hpc.base.errors import UserError
from cifar_hpc.study.folders import folders_with_runs, holds_runs, is_study_folder
from cifar_hpc.study.manifest import STUDY_FILE
from cifar_hpc.study.recorded import RecordedRun, Study, load_study, read_run
from cifar_hpc.study.run_state import RunState


def study_label(root: Path, results_dir: Path) -> str:
    """How a study is named in ``STUDY/ID``: its folder's path below ``results_dir`` (``ablation``),
    or the folder's own name when it is ``results_dir`` itself."""
    root, results_dir = Path(root), Path(results_dir)
    if root == results_dir:
        return results_dir.resolve().name
    try:
        return root.relative_to(results_dir).as_posix()
    except ValueError:
        return root.name


def find_run(results_dir: str | Path, ref: str) -> tuple[Study, RecordedRun]:
    """The run ``ref`` names (an id, its start, or ``STUDY/ID``) in any folder of ``results_dir`` that
    holds runs (``folders.folders_with_runs``: a study folder, or a folder of studies and loose runs).

    * A run whose id is the one asked wins over longer ids starting with it.
    * Every other case of more than one candidate is refused in one line that lists them as
      ``STUDY/ID`` and says how to choose; an unknown id lists where it looked.
    """
    results_dir = Path(results_dir)
    study_part, _, run_id = ref.strip().rpartition("/")
    if not run_id:
        raise UserError("give a run id (or the start of one, or STUDY/ID)")
    roots = folders_with_runs(results_dir)
    if study_part:
        roots = _named(roots, study_part.strip("/"), results_dir)
    found = [
        (study, run)
        for study in (load_study(root, check_mixing=False) for root in roots)
        for run in study.runs.values()
        if run.run_id.startswith(run_id)
    ]
    matches = [(study, run) for study, run in found if run.run_id == run_id] or found
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UserError(_none_found(ref, run_id, study_part, roots, results_dir))
    named = sorted(f"{study_label(study.root, results_dir)}/{run.run_id}" for study, run in matches)
    if len({run.run_id for _, run in matches}) == 1:
        raise UserError(
            f"run {matches[0][1].run_id} is in {len(matches)} studies: {_listed(named)}; "
            f"name one as STUDY/ID, e.g. {named[0]}"
        )
    raise UserError(f"run id {ref!r} is ambiguous in {results_dir}: {_listed(named)}; give more of the id, or STUDY/ID")


def _named(roots: Sequence[Path], name: str, results_dir: Path) -> list[Path]:
    """The folder of ``roots`` that ``STUDY/`` names, by its label or its folder's name."""
    chosen = [root for root in roots if name in (study_label(root, results_dir), root.name)]
    if not chosen:
        studies = ", ".join(study_label(root, results_dir) for root in roots)
        raise UserError(f"no study {name!r} in {results_dir} (studies: {studies})")
    return chosen


def _none_found(ref: str, run_id: str, study_part: str, roots: Sequence[Path], results_dir: Path) -> str:
    if study_part:
        ids = sorted(run.run_id for root in roots for run in load_study(root, check_mixing=False).runs.values())
        return f"no run {run_id!r} in study {study_part!r} of {results_dir} (its runs: {_listed(ids)})"
    return (
        f"no run {ref!r} in {results_dir} (looked in {_listed([str(root) for root in roots])}; "
        f"cifar-hpc status {results_dir} --runs lists them)"
    )


def _listed(items: Sequence[str], most: int = 5) -> str:
    return ", ".join(items[:most]) + (f" ... ({len(items)} in all)" if len(items) > most else "")


# --- the same run completed elsewhere ------------------------------------------------------------


def completed_elsewhere(results_dir: str | Path, run_ids: Iterable[str], here: Path) -> dict[str, str]:
    """Each of ``run_ids`` that a study of ``results_dir`` other than ``here`` holds completed, as
    ``{run id: "STUDY/ID"}`` (the first such study by name). Only the runs' own ``result.json`` files
    are read: a submit of a large grid asks this of every run."""
    results_dir, here = Path(results_dir), Path(here).resolve()
    if not results_dir.is_dir() or (results_dir / STUDY_FILE).exists():
        return {}
    others = ([results_dir] if holds_runs(results_dir) else []) + sorted(
        p for p in results_dir.iterdir() if p.is_dir() and is_study_folder(p)
    )
    others = [root for root in others if root.resolve() != here]
    found: dict[str, str] = {}
    for run_id in run_ids:
        for root in others:
            if (root / run_id).is_dir() and read_run(root / run_id)[0] is RunState.COMPLETED:
                found[run_id] = f"{study_label(root, results_dir)}/{run_id}"
                break
    return found


def elsewhere_note(found: dict[str, str], study: str) -> str:
    """One line for ``submit``: how many of its runs are completed in other studies (``found``, not
    empty), which, and what is done about it (they train again here: a study's results are its own)."""
    copies = _listed(sorted(found.values()), most=3)
    what = "1 run to submit is identical to a completed run of another study"
    if len(found) > 1:
        what = f"{len(found)} runs to submit are identical to completed runs of other studies"
    return (
        f"note: {what} ({copies}); trained again in {study}, whose results are its own "
        f"(to reuse {'it' if len(found) == 1 else 'one'} instead, copy its folder into {study}/ before submitting)"
    )
