"""The code of a study: what each submission recorded, what each run trained with, and where they differ.

``submit`` records the code it submits (``cifar_hpc.base.code_identity.current``) in ``study.json``,
as the study's ``code`` and on each job it submits (``cifar_hpc.study.manifest``); a run records the
code its process imported in ``result.json``'s ``code`` (``cifar_hpc.training.provenance``). On bare
metal an array task imports the checkout as it is when the task starts, hours later maybe, so the
two can differ; inside a container the image froze the code at build time, and the two differ only
when the image was rebuilt in between. Compared by ``id`` (a hash of the package's source).

Flagged where a reader looks: ``status --runs`` (a line per run), ``collect`` and the report (a
warning per study, and a row whose runs, or whose reference's, trained more than one code is marked
like a confounded comparison, †).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cifar_hpc.base import code_identity
from cifar_hpc.study.manifest import read_manifest
from cifar_hpc.study.recorded import RecordedRun


def _code(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, Mapping) and isinstance(value.get("id"), str) else None


def label_of(code: Mapping[str, Any] | None) -> str:
    """``c59e73e+changes 3f2a9c1d7e0b``; ``unknown`` for a run or submission that did not record it."""
    if code is None:
        return "unknown"
    return str(code.get("label") or code["id"])


def trained_code(run: RecordedRun) -> dict[str, Any] | None:
    """The code the run's process imported (its ``result.json``); None when not recorded."""
    return _code((run.result or {}).get("code"))


def submitted_code(run: RecordedRun) -> dict[str, Any] | None:
    """The code of the run's newest submission (its job in ``study.json``); None when not recorded."""
    return _code(run.submitted_code)


def code_differs(run: RecordedRun) -> bool | None:
    """The run trained other code than its newest submission's; None when either is not recorded."""
    trained, submitted = trained_code(run), submitted_code(run)
    if trained is None or submitted is None:
        return None
    return trained["id"] != submitted["id"]


def code_note(run: RecordedRun) -> str | None:
    """``trained code X, not its submission's Y``, or None when they agree (or are not both known)."""
    if not code_differs(run):
        return None
    return f"trained code {label_of(trained_code(run))}, not its submission's {label_of(submitted_code(run))}"


def code_mix(runs: Iterable[RecordedRun]) -> str | None:
    """When these runs (a row's, with its reference's) trained more than one code: which, how many runs
    each; None when they trained one (runs that did not record it are not counted)."""
    counts = Counter()
    labels = {}
    for run in runs:
        code = trained_code(run)
        if code is not None:
            counts[code["id"]] += 1
            labels[code["id"]] = label_of(code)
    if len(counts) < 2:
        return None
    listed = ", ".join(f"{labels[ident]} ({n} run{'s' if n > 1 else ''})" for ident, n in counts.most_common())
    return f"mixes code versions: {listed}"


def flagged_runs(runs: Iterable[RecordedRun]) -> list[RecordedRun]:
    """The runs that trained other code than their submission's."""
    return [run for run in runs if code_differs(run)]


def flagged_warning(runs: Iterable[RecordedRun]) -> str | None:
    """One line for a study's list of warnings: which runs trained other code than submitted."""
    flagged = flagged_runs(runs)
    if not flagged:
        return None
    listed = "; ".join(f"{run.run_id} {code_note(run)}" for run in flagged[:5])
    more = f" ... ({len(flagged)} in all)" if len(flagged) > 5 else ""
    return (
        f"{len(flagged)} run(s) trained other code than their submission's (the checkout changed before they "
        f"started): {listed}{more}"
    )


def submit_notes(folder: Path, now: Mapping[str, Any] | None = None) -> list[str]:
    """What ``submit`` says before adding to a study whose code has changed since its last submission
    (``now``: the code as it is, ``code_identity.current()`` by default)."""
    manifest = read_manifest(folder)
    before = _code((manifest or {}).get("code"))
    if before is None:
        return []
    now = now if now is not None else code_identity.current()
    if before["id"] == now["id"]:
        return []
    return [
        f"code changed since this study's last submission: it was {label_of(before)}, it is {label_of(now)} now; "
        "runs submitted now train the new code, and a row mixing the two is marked in collect and the report "
        "(bare metal: runs still queued import the checkout as it is when they start)"
    ]
