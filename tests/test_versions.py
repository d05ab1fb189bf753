"""Versions of a cell: runs of one cell whose settings differ (a quick `submit --set epochs=3 --cells ...`
into the study's folder, an edited grid resubmitted). The table shows the version the grid defines,
whichever submission ran last; --where and --all-versions show the others; a row is compared with its
reference only when the two differ in what the cell changes, else the row says why. Real tiny local
studies for the switch; written study folders for the rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli, write_grid
from test_collect import make_result

from cifar_hpc.config.train_config import TrainConfig
from cifar_hpc.report import aggregate
from cifar_hpc.study import recorded
from cifar_hpc.training.results import write_json_atomic

CELLS = """
[[cells]]
name = "sgd"

[[cells]]
name = "+clip"
set = { tricks = { clip = true } }
"""


def collect_json(study: Path, capsys, *options: str) -> dict:
    done = run_cli(["collect", study, "--no-slurm", "--format", "json", *options], capsys)
    assert done.code == 0, done.err
    return json.loads(done.out)


def table_rows(table: dict) -> list[tuple]:
    return [(r["cell"], r["compare_to"], r["run_ids"], r["delta_n_pairs"], r["delta_mean"]) for r in table["rows"]]


@pytest.mark.slow
def test_a_quick_check_in_the_study_folder_never_replaces_the_table(tmp_path, monkeypatch, capsys):
    """The issue's scenario: a main study (1 epoch, 2 seeds; the issue had 2 epochs), then `submit --set epochs=2 --cells sgd
    --seeds 0` into its folder, then a no-op resubmit of the grid. The table stays the main one each time,
    the warning names epochs, and --where / --all-versions (collect and report) show the quick check."""
    monkeypatch.chdir(tmp_path)
    grid = write_grid(tmp_path, "quick", CELLS, epochs=1, seeds="[0, 1]")
    grid.write_text('baseline_cell = "sgd"\n' + grid.read_text())
    first = run_cli(["submit", "--grid", grid, "--executor", "local"], capsys)
    assert first.code == 0, first.out + first.err
    study = tmp_path / "runs" / "quick"
    main = collect_json(study, capsys)
    assert [(r["cell"], r["compare_to"], r["n"], r["delta_n_pairs"]) for r in main["rows"]] == [
        ("sgd", None, 2, 0),
        ("+clip", "sgd", 2, 2),
    ]
    assert main["warnings"] == [] and main["other_versions"] == []
    main_ids = {rid for r in main["rows"] for rid in r["run_ids"]}

    quick = run_cli(
        ["submit", "--grid", grid, "--executor", "local", "--set", "epochs=2", "--cells", "sgd", "--seeds", "0"],
        capsys,
    )
    assert quick.code == 0 and "submitting 1" in quick.out, quick.out + quick.err
    quick_ids = {p.name for p in study.iterdir() if (p / "result.json").exists()} - main_ids
    assert len(quick_ids) == 1
    for when in ("after the quick check", "after a no-op resubmit"):
        table = collect_json(study, capsys)
        assert table_rows(table) == table_rows(main), when
        assert table["counts"]["completed"] == 4, when  # the quick check's run is not counted in the table
        assert [run["run_id"] for run in table["other_versions"]] == sorted(quick_ids), when
        assert table["other_versions"][0]["version"] == "epochs=2"
        (warning,) = [w for w in table["warnings"] if "not shown" in w]
        assert "1 run of sgd with epochs=2 (submitted 20" in warning, warning
        assert "the table has epochs=1, as the grid defines it" in warning and "--where epochs=2" in warning
        assert "--all-versions" in warning
        assert not any("edited" in w or "earlier version" in w for w in table["warnings"])
        if when == "after the quick check":
            again = run_cli(["submit", "--grid", grid, "--executor", "local"], capsys)
            assert again.code == 0 and "submitting 0" in again.out, again.out + again.err

    chosen = collect_json(study, capsys, "--where", "epochs=2")
    assert [(r["cell"], r["run_ids"], r["compare_to"]) for r in chosen["rows"]] == [("sgd", sorted(quick_ids), None)]
    assert any("--where epochs=2 leaves out 4 runs" in w for w in chosen["warnings"]), chosen["warnings"]

    every = collect_json(study, capsys, "--all-versions")
    by_cell = {r["cell"]: r for r in every["rows"]}
    assert set(by_cell) == {"sgd [epochs=1]", "sgd [epochs=2]", "+clip"}
    assert by_cell["sgd [epochs=2]"]["run_ids"] == sorted(quick_ids)
    # +clip trained 1 epoch: compared with the sgd it differs from only in the clipping
    assert by_cell["+clip"]["compare_to"] == "sgd [epochs=1]" and by_cell["+clip"]["delta_n_pairs"] == 2
    assert every["other_versions"] == [] and not any("not shown" in w for w in every["warnings"])

    html = tmp_path / "r.html"
    report = run_cli(["report", study, "--no-slurm", "--all-versions", "-o", html], capsys)
    assert report.code == 0, report.err
    assert "sgd [epochs=2]" in html.read_text()
    status = run_cli(["status", study, "--json"], capsys)
    assert any("epochs=2" in note for note in json.loads(status.out)["studies"][0]["notes"]), status.out


def test_a_bad_where_is_one_line_before_anything_is_read(tmp_path, capsys):
    study = write_versions(tmp_path / "s", defined=True)
    bad = run_cli(["collect", study, "--no-slurm", "--where", "epoch=3"], capsys)
    assert bad.code == 2 and "\n" not in bad.err.strip(), bad.err
    assert "--where epoch=3: unknown setting epoch (did you mean epochs?)" in bad.err
    none = run_cli(["collect", study, "--no-slurm", "--where", "epochs=5"], capsys)
    assert none.code == 2 and "--where epochs=5 matches no run of this study (epochs: 2, 3)" in none.err, none.err
    assert run_cli(["report", study, "--no-slurm", "--where", "optim.lrr=1"], capsys).code == 2


# --- written study folders: the rules ---------------------------------------------------------------


def write_versions(root: Path, *, defined: bool, quick_seeds: int = 1, clip_changes: bool = True) -> Path:
    """sgd and +clip at 2 epochs (seeds 0, 1), and sgd at 3 epochs (``quick_seeds`` seeds) submitted
    later with --set epochs=3, as submit records them; ``defined``: study.json says which runs the grid
    file defined (a study.json written before it did: not), ``clip_changes``: it records what each
    cell changes against its reference."""
    entries = []

    def run(cell: str, seed: int, epochs: int, acc: float, expansion: int) -> None:
        result = make_result("resnet18", cell, seed, acc, grid="quick")
        result["config"] |= {"epochs": epochs, "tricks": {"clip": cell == "+clip"}}
        result["run_id"] = run_id = f"{cell.strip('+')}e{epochs}s{seed}"
        write_json_atomic(root / run_id / "result.json", result)
        entry = {"run_id": run_id, "cell": cell, "model": "resnet18", "seed": seed, "axes": {"model": "resnet18"}}
        entry |= {"compare_to": None if cell == "sgd" else "sgd", "expansion": expansion}
        entry["setting"] = recorded.setting_of(result["config"])
        if defined and expansion == 1:
            entry["grid_defined"] = 1
        if clip_changes:
            entry["changes"] = ["tricks.clip"] if cell == "+clip" else []
        entries.append(entry)

    for seed in range(2):
        run("sgd", seed, 2, 0.50 + 0.01 * seed, 1)
        run("+clip", seed, 2, 0.55 + 0.02 * seed, 1)
    for seed in range(quick_seeds):
        run("sgd", seed, 3, 0.60 + 0.01 * seed, 2)
    manifest = {"schema": 1, "grid": "quick", "baseline_cell": "sgd", "runs": entries, "jobs": [], "expansions": 2}
    write_json_atomic(root / "study.json", manifest)
    return root


def rows_of(root: Path, **options) -> dict[str, aggregate.Row]:
    summary = aggregate.aggregate(recorded.load_study(root), None, **options)
    return {row.cell: row for row in summary.rows}


def test_without_a_record_the_version_with_most_completed_runs_is_shown(tmp_path):
    rows = rows_of(write_versions(tmp_path / "s", defined=False))
    assert rows["sgd"].run_ids == ["sgde2s0", "sgde2s1"] and rows["+clip"].delta_n_pairs == 2


def test_a_row_is_never_compared_with_a_reference_that_trained_otherwise(tmp_path):
    """An older study.json (nothing says what the grid defines) where the quick check has more completed
    runs than the main one: sgd is shown at 3 epochs, +clip has only 2-epoch runs. No delta, no p, no
    MDE, no cost ratio: the reason instead, recorded changes or not."""
    for changes in (True, False):
        root = write_versions(tmp_path / f"s{changes}", defined=False, quick_seeds=3, clip_changes=changes)
        summary = aggregate.aggregate(recorded.load_study(root), None)
        rows = {row.cell: row for row in summary.rows}
        assert rows["sgd"].run_ids == ["sgde3s0", "sgde3s1", "sgde3s2"]
        clip = rows["+clip"]
        assert clip.compare_to == "sgd" and clip.note == "reference trained 3 epochs, this row 2: no comparison"
        assert (clip.delta_mean, clip.p_value, clip.mde_pp, clip.cost_ratio, clip.delta_n_pairs) == (
            None,
            None,
            None,
            None,
            0,
        )
        (warning,) = [w for w in summary.warnings if "not shown" in w]
        assert warning.startswith("2 runs of sgd with epochs=2 ") and "the most completed runs" in warning


def test_where_takes_dotted_keys_and_toml_values(tmp_path):
    root = write_versions(tmp_path / "s", defined=True)
    from cifar_hpc.report.versions import parse_where

    assert parse_where(["epochs=3", "tricks.clip=false"]) == {"epochs": 3, "tricks.clip": False}
    # a value as the command line writes it, compared in the form config.json stores it
    stored = json.loads(json.dumps(TrainConfig.from_dict({"tricks": {"accumulate": "0:1,15:2"}}).to_dict()))
    assert parse_where(['tricks.accumulate="0:1,15:2"']) == {"tricks.accumulate": stored["tricks"]["accumulate"]}
    rows = rows_of(root, where=parse_where(["tricks.clip=false", "epochs=2"]))
    assert list(rows) == ["sgd"] and rows["sgd"].run_ids == ["sgde2s0", "sgde2s1"]


def test_all_versions_compares_each_row_with_the_version_of_its_reference_it_matches(tmp_path):
    root = write_versions(tmp_path / "s", defined=False, quick_seeds=3)
    summary = aggregate.aggregate(recorded.load_study(root), None, all_versions=True)
    rows = {row.cell: row for row in summary.rows}
    assert set(rows) == {"sgd [epochs=2]", "sgd [epochs=3]", "+clip"}
    assert rows["+clip"].compare_to == "sgd [epochs=2]" and rows["+clip"].delta_n_pairs == 2
    assert summary.warnings == [] and summary.other_versions == []  # sgd is there, in two versions
