"""The comparison table's types: ``Row`` (one setting of the study, its seeds aggregated) and
``Summary`` (the rows and the runs outside them), what ``aggregate`` builds and every renderer reads.

**JSON output** (``Summary.to_dict``; ``"schema": 2``: ``significant`` is decided on the adjusted p-value
since schema 2; other fields are only ever added, ``cost_ratio`` compares ``compute_s_mean`` since
``test_images`` was added). Accuracies are fractions in [0, 1] (the
differences too; ``mde_pp`` and the target effect are percentage points), times in seconds, memory in MiB;
unknown values are ``null``; floats carry 6 significant digits. ``rows`` are ``Row``'s fields in
order; ``failed``: run_id, model, cell, seed, error, slurm_job, log; ``missing``: ..., state
(missing|unknown), note; ``running``: ..., state (pending|running|requeued), slurm_job; ``corrupt``:
run_id, path (relative to the study folder), reason; ``other_versions`` (runs of another version of their
cell, or left out by ``--where``: ``cifar_hpc.report.versions``): run_id, model, cell, seed, state, version
(what tells it apart: ``epochs=3``, or ``left out by --where``);
``efficiency``: train_s, allocated_s, ratio, queue_wait_mean_s, source, devices, in_progress
(``cifar_hpc.report.efficiency``; null while no run has said how long it trained).
Rows are sorted per axes setting (models in their usual order), references first, then the rows of
each reference by ``delta_mean``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from cifar_hpc.study.run_state import RunState

if TYPE_CHECKING:
    from cifar_hpc.report.efficiency import Efficiency

CONFIDENCE = 0.95
JSON_SCHEMA = 2
GENERATED = "generated"

NOT_DONE = tuple(state.value for state in RunState if state is not RunState.COMPLETED)
"""States that make ``--strict`` fail: anything but completed."""


@dataclass(frozen=True)
class Row:
    """One setting of the study (a cell at one value of every axis), its seeds aggregated."""

    model: str
    axes: dict[str, Any]
    """The non-seed axis values of this row, model included (``{"model": "resnet18", "epochs": 2}``)."""
    cell: str
    compare_to: str | None
    """The reference cell (same axes); None: this row is a reference."""
    is_baseline: bool
    """The row compares with nothing (``compare_to`` is None)."""
    n: int
    """Completed runs (seeds) aggregated in this row."""
    expected: int
    """Runs of this row in study.json or on disk, in any state (other versions of its cell not counted)."""
    seeds: list[int]
    run_ids: list[str]
    test_images: int | None
    """Images in the test set the row's runs were scored on: accuracies are counted in whole images
    (the resolution they were measured at) before any statistic; None: not recorded."""
    test_acc_mean: float | None
    test_acc_std: float | None
    """ddof=1; None when n < 2."""
    test_acc_ci_low: float | None
    """The t-interval of the mean accuracy, clipped to [0, 1]; None when n < 2."""
    test_acc_ci_high: float | None
    test_acc_ci_clipped: bool
    """The t-interval reached past 0 or 1 (an accuracy cannot) and was clipped there."""
    delta_mean: float | None
    """Paired difference from the reference; None on a reference row."""
    delta_ci_low: float | None
    """None with fewer than 2 pairs or no spread between them."""
    delta_ci_high: float | None
    delta_n_pairs: int
    """Seeds completed in both this row and its reference."""
    delta_sd: float | None
    """Standard deviation of the paired differences (ddof=1)."""
    p_value: float | None
    """Two-sided paired t-test; None when the spread cannot be estimated: fewer than
    ``significance.MIN_PAIRS`` pairs, or the same difference (in whole test images) for every pair."""
    p_adjusted: float | None
    """Holm's adjustment over the comparisons of the same axes."""
    significant: bool | None
    """``p_adjusted < 0.05``; None without a p-value."""
    mde_pp: float | None
    """Smallest true difference (pp) detected with 80% power at α = 0.05 with these pairs and this spread;
    None without a p-value."""
    seeds_needed: int | None
    """Seeds that detect the target effect with 80% power (``--target-effect``); None otherwise or
    without a p-value."""
    note: str | None
    """Why a figure is missing: ``reference``, ``1 pair: no test``,
    ``no spread: no test``, ``no completed run of <reference>``, ..."""
    design_note: str | None
    """What else differs from the reference than the cell says (a trick clash resolution), or that the two
    rows' runs trained more than one code version (``cifar_hpc.study.code_version.code_mix``): a confounded comparison."""
    best_val_acc_mean: float | None
    epochs_run_mean: float | None
    wall_s_mean: float | None
    """Per run, process start-up included."""
    compute_s_mean: float | None
    """Per run: device-seconds of training, validation and test (each attempt's ``timing`` ×
    its devices; start-up excluded); None when a run did not record its timing."""
    train_images_per_s_mean: float | None
    gpu_hours_mean: float | None
    """Per run."""
    gpu_hours_sum: float | None
    """The row's total over its completed runs."""
    cost_ratio: float | None
    """``compute_s_mean`` over the reference's (like with like: start-up excluded); both rows complete."""
    gpu_util_mean: float | None
    """Mean over runs of each run's mean utilisation, percent."""
    gpu_util_p95: float | None
    """Mean over runs of each run's 95th percentile, percent."""
    gpu_mem_peak_mib: float | None
    """Max over runs."""
    lr_found_mean: float | None
    """The LR finder's pick; None when the finder was off."""
    n_failed: int
    n_running: int
    """Pending + running + requeued."""
    n_missing: int
    """Missing + unknown."""
    n_corrupt: int

    @property
    def complete(self) -> bool:
        return self.n == self.expected and self.n > 0

    @property
    def setting(self) -> str:
        """The non-model axes in words (``epochs=2``); "" when the study has none."""
        return ", ".join(f"{k}={v}" for k, v in self.axes.items() if k != "model")


ROW_FIELDS = tuple(f.name for f in fields(Row))

METRICS = {  # result field -> (row field, how runs are combined)
    "best_val_acc": ("best_val_acc_mean", "mean"),
    "epochs_run": ("epochs_run_mean", "mean"),
    "wall_s": ("wall_s_mean", "mean"),
    "train_images_per_s": ("train_images_per_s_mean", "mean"),
    "gpu_hours": ("gpu_hours_mean", "mean"),
    "gpu_util_mean": ("gpu_util_mean", "mean"),
    "gpu_util_p95": ("gpu_util_p95", "mean"),
    "gpu_mem_peak_mib": ("gpu_mem_peak_mib", "max"),
    "lr_found": ("lr_found_mean", "mean"),
}


@dataclass
class Summary:
    """The aggregated study: what every renderer and the plot read."""

    grid: str | None
    data: str | None
    baseline_cell: str
    rows: list[Row]
    failed: list[dict[str, Any]]
    missing: list[dict[str, Any]]
    running: list[dict[str, Any]]
    corrupt: list[dict[str, Any]]
    counts: dict[str, int]
    warnings: list[str]
    slurm_notes: list[str]
    confidence: float = CONFIDENCE
    other_versions: list[dict[str, Any]] = field(default_factory=list)
    """Runs left out of the table: other versions of their cell, or not chosen by ``--where``."""
    target_effect_pp: float | None = None
    efficiency: Efficiency | None = None
    """Training over allocated device-seconds, and the queue wait (``cifar_hpc.report.efficiency``)."""
    tricks: list[str] = field(default_factory=list)
    """What the rows' tricks changed besides themselves, one line per text with its cells
    (``cifar_hpc.report.study_design.trick_lines``): SWA's start and LR, clash resolutions."""

    @property
    def alpha(self) -> float:
        return round(1 - self.confidence, 10)

    @property
    def used_gpu(self) -> bool:
        """Some row's runs held a GPU (else every time in the table is a CPU's, on a shared machine noise)."""
        return any((r.gpu_hours_mean or 0) > 0 for r in self.rows)

    @property
    def generated(self) -> bool:
        return self.data == GENERATED

    @property
    def incomplete(self) -> int:
        """Runs that are not completed (what ``--strict`` fails on)."""
        return sum(self.counts[s] for s in NOT_DONE)

    @property
    def title(self) -> str:
        title = f"Study {self.grid}" if self.grid else "Runs"
        data = {"cifar10": "CIFAR-10", GENERATED: "GENERATED DATA, not CIFAR-10"}.get(
            self.data or "", self.data or "data unknown"
        )
        return f"{title}: test accuracy ({data})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": JSON_SCHEMA,
            "title": self.title,
            "grid": self.grid,
            "data": self.data,
            "generated_data": self.generated,
            "baseline_cell": self.baseline_cell,
            "confidence": self.confidence,
            "alpha": self.alpha,
            "power": _power(),
            "target_effect_pp": self.target_effect_pp,
            "counts": self.counts,
            "rows": [asdict(row) for row in self.rows],
            "failed": self.failed,
            "missing": self.missing,
            "running": self.running,
            "corrupt": self.corrupt,
            "other_versions": self.other_versions,
            "warnings": self.warnings,
            "slurm_notes": self.slurm_notes,
            "efficiency": self.efficiency.to_dict() if self.efficiency else None,
            "tricks": self.tricks,
        }


def _power() -> float:
    from cifar_hpc.report.significance import POWER  # scipy: only when the JSON is written

    return POWER
