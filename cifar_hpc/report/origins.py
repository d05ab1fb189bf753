"""Where a study's results come from, for the report's provenance section: the data (kind and
fingerprint), the code (each submission's and what the runs trained), the libraries, the hosts and
when it ran. Each fact is counted over the runs that recorded it, so a study that mixes two is seen
to (``3 runs: torch 2.11.0; 1 run: torch 2.12.0``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cifar_hpc.report.table import GENERATED
from cifar_hpc.study.code_version import flagged_runs, label_of, trained_code
from cifar_hpc.study.manifest import JobRecord, read_manifest
from cifar_hpc.study.recorded import Study

LIBRARIES = ("cifar_hpc", "torch", "lightning", "python")


@dataclass(frozen=True)
class Fact:
    name: str
    value: str
    alarm: bool = False
    """A reader must not miss it (generated data, code that changed under a run)."""


def _counted(values: Iterable[Any], unit: str = "run") -> str:
    counts = Counter(str(v) for v in values if v not in (None, ""))
    if not counts:
        return "not recorded"
    if len(counts) == 1:
        ((value, n),) = counts.items()
        return f"{value} (all {n} {unit}{'s' * (n > 1)} that record it)"
    return "; ".join(f"{value} ({n} {unit}{'s' * (n > 1)})" for value, n in counts.most_common())


def _results(study: Study) -> list[dict[str, Any]]:
    return [run.result for run in study.runs.values() if run.result is not None]


def data_facts(study: Study) -> list[Fact]:
    results = _results(study)
    kinds = {r.get("data") for r in results} - {None}
    generated = GENERATED in kinds
    kind = _counted(r.get("data") for r in results)
    if generated:
        kind = f"GENERATED DATA, not CIFAR-10: {kind}"
    return [
        Fact("data", kind, alarm=generated),
        Fact("data fingerprint", _counted(r.get("data_fingerprint") for r in results)),
        Fact("test set size", _counted(r.get("test_images") for r in results)),
    ]


def code_facts(study: Study) -> list[Fact]:
    manifest = read_manifest(study.root) or {}
    jobs = [JobRecord.from_dict(entry) for entry in manifest.get("jobs", [])]
    submitted = [f"{job.submitted_at[:19]} {label_of(job.code)}" for job in jobs if job.code is not None]
    flagged = flagged_runs(study.runs.values())
    facts = [
        Fact("code of the latest submission", label_of(manifest["code"]) if manifest.get("code") else "not recorded"),
        Fact("code per submission", "; ".join(submitted) if submitted else "not recorded"),
        Fact(
            "code the runs trained", _counted(label_of(trained_code(r)) for r in study.runs.values() if trained_code(r))
        ),
    ]
    if flagged:
        facts.append(
            Fact(
                "runs whose code changed",
                f"{len(flagged)} run(s) trained other code than their submission's: "
                + ", ".join(r.run_id for r in flagged[:20])
                + (" ..." if len(flagged) > 20 else ""),
                alarm=True,
            )
        )
    return facts


def library_facts(study: Study) -> list[Fact]:
    results = _results(study)
    versions = [r.get("versions") for r in results if isinstance(r.get("versions"), dict)]
    facts = [Fact(name, _counted(v.get(name) for v in versions)) for name in LIBRARIES]
    facts.append(Fact("git commit (of the runs)", _counted(v.get("git_commit") for v in versions)))
    containers = [r["container"] for r in results if isinstance(r.get("container"), dict)]
    shown = (" ".join(filter(None, (c.get("runtime"), c.get("image")))) for c in containers)
    facts.append(Fact("container", _counted(shown)))
    return facts


def time_facts(study: Study) -> list[Fact]:
    results = _results(study)
    manifest = read_manifest(study.root) or {}
    submitted = sorted(str(j.get("submitted_at")) for j in manifest.get("jobs", []) if j.get("submitted_at"))
    started = sorted(str(r["started_at"]) for r in results if r.get("started_at"))
    finished = sorted(str(r["finished_at"]) for r in results if r.get("finished_at"))
    hosts = Counter(h for r in results for h in (r.get("hosts") or []) if isinstance(h, str))
    return [
        Fact("submitted", _span(submitted) + (f" ({len(submitted)} submissions)" if len(submitted) > 1 else "")),
        Fact("ran", f"first start {started[0]}, last end {finished[-1]}" if started and finished else "not recorded"),
        Fact("hosts", ", ".join(f"{h} ({n})" for h, n in hosts.most_common(12)) if hosts else "not recorded"),
    ]


def _span(times: list[str]) -> str:
    if not times:
        return "not recorded"
    return times[0] if times[0] == times[-1] else f"{times[0]} to {times[-1]}"


def all_facts(study: Study) -> list[tuple[str, list[Fact]]]:
    """The provenance section's groups: data, code, libraries, time and place."""
    return [
        ("Data", data_facts(study)),
        ("Code", code_facts(study)),
        ("Libraries", library_facts(study)),
        ("When and where", time_facts(study)),
    ]
