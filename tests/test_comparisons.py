"""The comparison table a reviewer accepts: rows that never merge settings, each row against its own
reference, Holm-adjusted significance and the smallest detectable effect (cross-checked against
scipy and statsmodels), cost per run, and the CLI's choices (format by extension, --baseline,
--target-effect). Written study folders for the statistics; real tiny runs where training is involved."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import read_json, run_cli, write_grid
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower
from test_collect import make_result, png_size

from cifar_hpc.report import aggregate, plots, render, significance
from cifar_hpc.study import recorded
from cifar_hpc.training.results import write_json_atomic

# A leave-one-out study: cell -> (reference, mean accuracy); five seeds each, seed effects shared.
DESIGN = {
    "baseline": (None, 0.9000),
    "+a": ("baseline", 0.9060),
    "+b": ("baseline", 0.9001),  # raw p = 0.031, Holm-adjusted 0.062: not significant
    "+c": ("baseline", 0.9030),
    "full": ("baseline", 0.9150),
    "full-a": ("full", 0.9080),
    "full-b": ("full", 0.9148),
}
SEED_EFFECT = [0.0, 0.0021, -0.0013, 0.0008, -0.0017]
NOISE = np.random.default_rng(7).normal(0, 0.0012, size=(len(DESIGN), len(SEED_EFFECT)))


def accuracy(cell: str, seed: int) -> float:
    return round(DESIGN[cell][1] + SEED_EFFECT[seed] + NOISE[list(DESIGN).index(cell), seed], 6)


def write_study(
    root: Path, *, seeds: int = 5, model: str = "resnet18", gpu_hours: dict | None = None, cpu: bool = False
) -> Path:
    """study.json with compare_to per run (as submit writes it) and one completed result per run;
    ``gpu_hours`` per cell (its training and evaluation time in proportion), ``cpu``: runs without a GPU."""
    entries = []
    for cell, (reference, _) in DESIGN.items():
        for seed in range(seeds):
            run_id = f"{model[-2:]}{cell.replace('+', 'p').replace('-', 'm')}s{seed}"
            result = make_result(model, cell, seed, accuracy(cell, seed), grid="loo")
            result["run_id"], result["config"]["lr"] = run_id, 0.1 if cell == "baseline" else 0.2
            result["config"]["trick"] = cell  # each cell its own configuration, as in a real grid
            if gpu_hours is not None:
                hours = gpu_hours.get(cell, 0.1)
                result["gpu_hours"] = hours
                result["timing"] = {
                    "imports_s": 6.0,
                    "train_s": 3000 * hours,
                    "val_s": 400 * hours,
                    "test_s": 100 * hours,
                }
            if cpu:
                result |= {"gpu_hours": 0.0, "gpu_util_mean": None, "gpu_util_p95": None, "gpu_mem_peak_mib": None}
            write_json_atomic(root / run_id / "result.json", result)
            axes = {"model": model}
            entries.append(
                {"run_id": run_id, "cell": cell, "model": model, "seed": seed, "axes": axes, "compare_to": reference}
            )
    write_json_atomic(
        root / "study.json",
        {"schema": 1, "grid": "loo", "baseline_cell": "baseline", "runs": entries, "jobs": [], "expansions": 1},
    )
    return root


def summarize(root: Path, **options) -> aggregate.Summary:
    return aggregate.aggregate(recorded.load_study(root), None, **options)


def rows_by_cell(summary: aggregate.Summary) -> dict[str, aggregate.Row]:
    return {row.cell: row for row in summary.rows}


def test_each_row_is_compared_with_its_own_reference(tmp_path):
    rows = rows_by_cell(summarize(write_study(tmp_path / "loo")))
    assert {cell: row.compare_to for cell, row in rows.items()} == {c: ref for c, (ref, _) in DESIGN.items()}
    for cell, (reference, _) in DESIGN.items():
        if reference is None:
            assert rows[cell].delta_mean is None and rows[cell].note == "reference"
            continue
        mine, theirs = [accuracy(cell, s) for s in range(5)], [accuracy(reference, s) for s in range(5)]
        test = stats.ttest_rel(mine, theirs)
        low, high = test.confidence_interval()
        row = rows[cell]
        assert row.delta_mean == pytest.approx(np.mean(np.subtract(mine, theirs)), abs=1e-6)
        assert (row.delta_ci_low, row.delta_ci_high) == (pytest.approx(low, abs=1e-6), pytest.approx(high, abs=1e-6))
        assert row.p_value == pytest.approx(test.pvalue, rel=1e-4)


def test_holm_significance_and_mde_match_statsmodels(tmp_path):
    summary = summarize(write_study(tmp_path / "loo"))
    compared = [row for row in summary.rows if row.compare_to is not None]
    raw = [stats.ttest_rel(*_pairs(row)).pvalue for row in compared]
    reject, adjusted, _, _ = multipletests(raw, alpha=0.05, method="holm")  # one family: one model, no axes
    for row, p_adj, significant in zip(compared, adjusted, reject):
        assert row.p_adjusted == pytest.approx(p_adj, rel=1e-4)
        assert row.significant is bool(significant)
        d = np.subtract(*_pairs(row))
        effect = TTestPower().solve_power(nobs=len(d), alpha=0.05, power=0.8, alternative="two-sided")
        assert row.mde_pp == pytest.approx(100 * effect * d.std(ddof=1), rel=1e-3)
    # the raw p-value alone would call +b vs baseline or full-b vs full something: Holm does not
    assert sum(p < 0.05 for p in raw) > sum(reject)
    assert rows_by_cell(summary)["+b"].significant is False


def _pairs(row: aggregate.Row) -> tuple[list[float], list[float]]:
    return [accuracy(row.cell, s) for s in range(5)], [accuracy(row.compare_to, s) for s in range(5)]


def test_families_are_per_model_and_axes(tmp_path):
    root = write_study(tmp_path / "loo")
    other = write_study(tmp_path / "other", model="resnet34")
    manifest = read_json(root / "study.json")
    manifest["runs"] += read_json(other / "study.json")["runs"]
    for folder in other.iterdir():
        if folder.is_dir():
            folder.rename(root / folder.name)
    write_json_atomic(root / "study.json", manifest)
    summary = summarize(root)
    for model in ("resnet18", "resnet34"):
        compared = [r for r in summary.rows if r.model == model and r.compare_to]
        _, adjusted, _, _ = multipletests([r.p_value for r in compared], method="holm")
        assert [r.p_adjusted for r in compared] == pytest.approx(list(adjusted), rel=1e-4)
    assert [r.model for r in summary.rows] == ["resnet18"] * 7 + ["resnet34"] * 7


def test_seeds_needed_for_a_target_effect(tmp_path, capsys):
    root = write_study(tmp_path / "loo")
    result = run_cli(["collect", root, "--no-slurm", "--target-effect", "0.2", "--format", "json"], capsys)
    assert result.code == 0, result.err
    table = json.loads(result.out)
    assert table["target_effect_pp"] == 0.2
    for row in table["rows"]:
        if row["compare_to"] is None:
            assert row["seeds_needed"] is None
            continue
        needed = significance.seeds_needed(0.002, row["delta_sd"])
        assert row["seeds_needed"] == needed and needed >= 2
        # the first n that reaches 80% power (statsmodels' power is NaN at n = 2: checked through the MDE)
        assert significance.mde(needed, row["delta_sd"]) <= 0.002 < significance.mde(needed - 1, row["delta_sd"]) or (
            needed == 2
        )
    assert "seeds for 0.2 pp" in run_cli(["collect", root, "--no-slurm", "--target-effect", "0.2"], capsys).out
    bad = run_cli(["collect", root, "--no-slurm", "--target-effect", "0"], capsys)
    assert bad.code == 2 and "--target-effect" in bad.err and len(bad.err.strip().splitlines()) == 1


def test_baseline_option_compares_every_row_with_that_cell(tmp_path, capsys):
    root = write_study(tmp_path / "loo")
    rows = rows_by_cell(summarize(root, baseline="full"))
    assert rows["full"].compare_to is None and {r.compare_to for c, r in rows.items() if c != "full"} == {"full"}
    result = run_cli(["collect", root, "--no-slurm", "--baseline", "nope"], capsys)
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1
    assert "'nope' is not a cell of this study; cells: +a, +b, +c, baseline, full, full-a, full-b" in result.err


@pytest.mark.parametrize(
    "name, starts", [("t.md", "# Study"), ("t.csv", "data,model"), ("t.json", "{"), ("t.tex", "% generated")]
)
def test_output_extension_picks_the_format(tmp_path, capsys, name, starts):
    root = write_study(tmp_path / "loo", seeds=2)
    result = run_cli(["collect", root, "--no-slurm", "-o", tmp_path / name], capsys)
    assert result.code == 0, result.err
    text = (tmp_path / name).read_text()
    assert text.startswith(starts)
    assert "p_adjusted" in text or "p adj" in text


def test_an_unknown_output_extension_is_refused(tmp_path, capsys):
    root = write_study(tmp_path / "loo", seeds=2)
    result = run_cli(["collect", root, "--no-slurm", "-o", tmp_path / "t.xlsx"], capsys)
    assert result.code == 2 and "t.xlsx" in result.err and ".tex" in result.err
    assert not (tmp_path / "t.xlsx").exists()


def test_a_folder_of_several_studies_is_refused_with_their_list(tmp_path, capsys):
    write_study(tmp_path / "runs" / "loo", seeds=2)
    write_study(tmp_path / "runs" / "other", seeds=2)
    result = run_cli(["collect", tmp_path / "runs", "--no-slurm"], capsys)
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1
    assert "holds 2 studies" in result.err and "runs/loo" in result.err and "runs/other" in result.err


def test_cost_per_run_and_its_ratio_only_between_complete_rows(tmp_path):
    root = write_study(tmp_path / "loo", seeds=3, gpu_hours={"baseline": 0.10, "+a": 0.15, "full": 0.30})
    (root / "18fullmas2" / "result.json").unlink()  # full-a seed 2 never finished: an incomplete row
    rows = rows_by_cell(summarize(root))
    assert rows["+a"].gpu_hours_mean == pytest.approx(0.15) and rows["+a"].gpu_hours_sum == pytest.approx(0.45)
    assert rows["+a"].cost_ratio == pytest.approx(1.5) and rows["full"].cost_ratio == pytest.approx(3.0)
    assert rows["full-a"].n == 2 and rows["full-a"].expected == 3
    assert rows["full-a"].gpu_hours_mean == pytest.approx(0.1)  # per run: an incomplete row is not cheaper
    assert rows["full-a"].cost_ratio is None and rows["baseline"].cost_ratio is None


def test_cost_compares_training_and_evaluation_not_start_up(tmp_path, capsys):
    """The first run of a local submit (the reference cell) pays ~5 s of imports: identical work read
    0.64x on wall time. cost x compares the timing block's training and evaluation, like with like."""
    root = write_study(tmp_path / "loo", seeds=3, cpu=True)
    for folder in root.iterdir():
        if folder.is_dir():
            result = read_json(folder / "result.json")
            first = result["config"]["cell"] == "baseline"  # ran first in each process: paid the imports
            work = {"train_s": 7.0, "val_s": 1.5, "test_s": 0.5}
            result["timing"] = {"imports_s": 5.0 if first else 0.0, "data_s": 0.2, "setup_s": 0.8, **work}
            result["wall_s"] = 9.0 + 1.0 + (5.0 if first else 0.0)
            write_json_atomic(folder / "result.json", result)
    rows = rows_by_cell(summarize(root))
    assert rows["+a"].wall_s_mean / rows["baseline"].wall_s_mean == pytest.approx(0.667, abs=1e-3)  # the old 0.64x
    assert rows["+a"].cost_ratio == pytest.approx(1.0) and rows["+a"].compute_s_mean == pytest.approx(9.0)
    md = run_cli(["collect", root, "--no-slurm", "--format", "md"], capsys).out
    assert "cost × = CPU-seconds of training and evaluation per run relative to the reference (process start-up" in md
    assert "no GPU was used: on a shared CPU machine these times are noise, not a cost" in md
    result = run_cli(["collect", root, "--no-slurm", "--format", "csv", "--plot-cost", tmp_path / "c.png"], capsys)
    assert result.code == 0 and png_size(tmp_path / "c.png") == plots.COST_PLOT_SIZE


def test_a_cost_axis_picks_a_readable_unit():
    assert plots.time_unit(9.0) == ("s", 1.0) and plots.time_unit(119.0) == ("s", 1.0)
    assert plots.time_unit(900.0) == ("min", 60.0) and plots.time_unit(3 * 3600.0) == ("h", 3600.0)


def test_a_narrow_terminal_drops_empty_columns_first_and_statistics_last(tmp_path):
    """CPU runs at 80 columns: p adj, MDE and the target's seeds stay; the always-empty GPU columns go
    first, then the per-run details; the note says which went and why."""
    summary = summarize(write_study(tmp_path / "loo", seeds=3, cpu=True), target_effect_pp=0.5)
    text = render.render_rich(summary, width=80)
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("────"))
    header = " ".join(lines[2:rule])  # headers wrap over lines where the width is short
    assert all(name in header for name in ("p adj", "MDE", "seeds", "Δ pp", "test acc %")), header
    assert max(map(len, lines)) <= 80 and "+1.37" in text
    said = " ".join(text.split())
    assert "(not shown, empty in every row: GPU-h/run, util %, p95 %, peak MiB, LR found; hidden at this" in said
    wide = " ".join(render.render_rich(summary, width=150).split())
    assert "empty in every row" in wide and "terminal width" not in wide and "best val %" in wide


def test_cost_plot_is_a_png(tmp_path, capsys):
    root = write_study(tmp_path / "loo", seeds=3, gpu_hours={"baseline": 0.1, "full": 0.3})
    result = run_cli(
        [
            "collect",
            root,
            "--no-slurm",
            "--format",
            "md",
            "--plot",
            tmp_path / "e.png",
            "--plot-cost",
            tmp_path / "c.png",
        ],
        capsys,
    )
    assert result.code == 0, result.err
    assert png_size(tmp_path / "c.png") == plots.COST_PLOT_SIZE
    assert png_size(tmp_path / "e.png") == plots.effects_plot_size(1, 6)


def test_plain_runs_of_one_cell_with_other_configs_are_never_seeds_of_one_row(tmp_path):
    """A folder of `cifar-hpc train` runs (no study.json): same tricks, different learning rates."""
    root = tmp_path / "plain"
    for seed in range(2):
        for lr, acc in ((0.1, 0.90), (0.4, 0.80)):
            result = make_result("resnet18", None, seed, acc, grid=None)
            result["config"]["optim"] = {"lr": lr}
            result["run_id"] = f"lr{lr}s{seed}"
            write_json_atomic(root / result["run_id"] / "result.json", result)
    summary = summarize(root)  # one version of the cell shown (no study.json: the most completed runs)
    assert len(summary.rows) == 1 and summary.rows[0].n == 2 and len(summary.other_versions) == 2
    assert any("2 runs of crop+flip with optim.lr=" in w and "--all-versions" in w for w in summary.warnings)
    every = summarize(root, all_versions=True)
    assert {r.cell: (r.n, round(r.test_acc_mean, 2)) for r in every.rows} == {
        "crop+flip [optim.lr=0.1]": (2, 0.90),
        "crop+flip [optim.lr=0.4]": (2, 0.80),
    }


@pytest.mark.slow
def test_an_axis_makes_rows_and_an_edited_grid_supersedes_old_runs(tmp_path, monkeypatch, capsys):
    """Real tiny runs: [axes] epochs = [1, 2] gives two rows (not one row "1/2"); editing the grid and
    resubmitting into the same folder puts only the new runs in the table, the old ones listed."""
    monkeypatch.chdir(tmp_path)
    grid = write_grid(tmp_path, "axis", '[[cells]]\nname = "baseline"\n')
    grid.write_text(grid.read_text().replace('model = ["resnet18"]', 'model = ["resnet18"]\nepochs = [1, 2]'))
    first = run_cli(["submit", "--grid", grid, "--executor", "local"], capsys)
    assert first.code == 0, first.out + first.err
    study = tmp_path / "runs" / "axis"
    table = json.loads(run_cli(["collect", study, "--no-slurm", "--format", "json"], capsys).out)
    assert [(row["axes"], row["n"]) for row in table["rows"]] == [
        ({"model": "resnet18", "epochs": 1}, 1),
        ({"model": "resnet18", "epochs": 2}, 1),
    ]
    assert table["warnings"] == [] and table["generated_data"] is True
    for row in table["rows"]:  # real runs: the test set's size (20 images) and the work without start-up
        assert row["test_images"] == 20 and round(row["test_acc_mean"] * 20, 6).is_integer()
        assert 0 < row["compute_s_mean"] < row["wall_s_mean"]
    old_ids = {rid for row in table["rows"] for rid in row["run_ids"]}

    grid.write_text(grid.read_text().replace("batch_size = 12", "batch_size = 10"))  # an edited cell
    again = run_cli(["submit", "--grid", grid, "--executor", "local"], capsys)
    assert again.code == 0 and "submitting 2" in again.out
    table = json.loads(run_cli(["collect", study, "--no-slurm", "--format", "json"], capsys).out)
    assert len(table["rows"]) == 2 and not old_ids & {rid for row in table["rows"] for rid in row["run_ids"]}
    assert {run["run_id"] for run in table["other_versions"]} == old_ids
    assert {run["version"] for run in table["other_versions"]} == {"batch_size=12"}
    assert table["counts"]["completed"] == 2  # the other version's runs are not counted either


def test_a_confounded_comparison_is_labelled_in_the_table(tmp_path, capsys):
    """The old ablation's full-swa: removing SWA from a recipe with early stopping switches early
    stopping back on, so the row measures two tricks. Configs as training writes them."""
    from cifar_hpc.study.design import reference_of
    from cifar_hpc.study.grid import expand, parse_grid

    cells = {
        "baseline": {},
        "full": {"tricks": {"swa": True, "early_stop": True}},
        "full-swa": {"tricks": {"swa": False, "early_stop": True}},
    }
    grid = parse_grid(
        {
            "base": {"epochs": 4},
            "axes": {"seed": [0, 1]},
            "cells": [
                {"name": name, "set": settings} | ({"compare_to": "full"} if name == "full-swa" else {})
                for name, settings in cells.items()
            ],
        },
        default_name="confounded",
    )
    root = tmp_path / "confounded"
    entries = []
    for run in expand(grid, results_dir=tmp_path):
        result = make_result("resnet18", run.cell, run.config.seed, 0.9 + 0.01 * run.config.seed, grid="confounded")
        result["run_id"], result["config"] = run.run_id, run.config.to_dict()
        write_json_atomic(root / run.run_id / "result.json", result)
        entries.append({"run_id": run.run_id, "cell": run.cell, "model": "resnet18", "seed": run.config.seed})
        entries[-1]["compare_to"] = reference_of(grid, run.cell)
    write_json_atomic(root / "study.json", {"schema": 1, "grid": "confounded", "runs": entries, "jobs": []})
    rows = rows_by_cell(summarize(root))
    assert rows["full-swa"].compare_to == "full"
    assert rows["full-swa"].design_note.startswith("confounded: also changes tricks.early_stop")
    assert rows["full"].design_note.startswith("no effect: tricks.early_stop=True is undone")
    assert rows["baseline"].design_note is None
    result = run_cli(["collect", root, "--no-slurm", "--format", "md"], capsys)
    assert "†" in result.out and "Confounded comparisons" in result.out
