"""Grids: pure expansion, stable run ids, clear errors for malformed grid files."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import assert_golden, run_cli, write_grid

from cifar_hpc.base.errors import UserError
from cifar_hpc.study.grid import expand, load_grid, parse_grid, render_runs
from cifar_hpc.training.tricks import TRICKS


def test_shipped_grids_expand():
    counts = {name: len(expand(load_grid(name))) for name in ("ablation", "models", "smoke", "fast")}
    # ablation: 2 models x (baseline + 8 alone + full + 7 full-minus: full has no early_stop) x 3 seeds
    assert counts == {"ablation": 2 * 17 * 3, "models": 6, "smoke": 4, "fast": 1}


def test_ablation_cells_are_what_the_study_needs():
    runs = expand(load_grid("ablation"))
    cells = Counter(run.cell for run in runs)
    in_full = [t for t in TRICKS if t != "early_stop"]  # SWA switches early stopping off
    assert set(cells) == {"baseline", "full", *(f"+{t}" for t in TRICKS), *(f"full-{t}" for t in in_full)}
    assert set(cells.values()) == {6}  # 2 models x 3 seeds each
    by_cell = {run.cell: run.config for run in runs if run.config.model == "resnet34" and run.config.seed == 2}
    base, full = by_cell["baseline"], by_cell["full"]
    assert not (base.augment.crop or base.augment.flip or base.tricks.swa or base.tricks.accumulate)
    assert full.tricks.swa and full.tricks.lr_find and full.tricks.accumulate == ((0, 1), (15, 2))
    assert by_cell["+swa"].tricks.swa and not by_cell["+swa"].augment.crop
    assert not by_cell["full-swa"].tricks.swa and by_cell["full-swa"].tricks.lr_find


def test_runs_are_labelled_and_placed_by_run_id(tmp_path):
    runs = expand(load_grid("smoke"), results_dir=tmp_path)
    assert len({run.run_id for run in runs}) == len(runs)
    for run in runs:
        assert run.config.grid == "smoke" and run.config.wandb.group == "smoke"
        assert run.config.out_dir == str(tmp_path / "smoke" / run.run_id)
    # ids do not depend on where results go
    assert [r.run_id for r in runs] == [r.run_id for r in expand(load_grid("smoke"), results_dir="elsewhere")]


def test_grid_show_text_is_pinned(monkeypatch, tmp_path):
    # the ids include the data's fingerprint when data/generated exists: pin them without it
    grid = load_grid("smoke")
    monkeypatch.chdir(tmp_path)
    assert_golden("grid_show_smoke.txt", render_runs(grid, expand(grid)))


BAD = {
    "unknown top key": ({"bogus": 1}, "unknown key 'bogus'"),
    "unknown trick": ({"ablation": {"tricks": ["dropout"]}}, "unknown trick 'dropout'; valid: crop"),
    "unknown axis": ({"axes": {"optimizer": ["sgd"]}}, "unknown axis 'optimizer'"),
    "empty axis": ({"axes": {"seed": []}}, "must be a non-empty list"),
    "shell in a cell name": ({"cells": [{"name": "x; rm -rf ~"}]}, "may only use letters"),
    "shell in the grid name": ({"name": "$(reboot)"}, "may only use letters"),
    "duplicate cell": ({"cells": [{"name": "a"}, {"name": "a"}], "baseline_cell": "a"}, "defined twice"),
    "missing baseline": ({"cells": [{"name": "a"}]}, "baseline_cell 'baseline' is not one of the cells"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_grids_are_refused(case):
    raw, message = BAD[case]
    with pytest.raises(UserError, match=None) as error:
        parse_grid(raw, default_name="g")
    assert message in str(error.value)


def test_bad_values_name_the_cell():
    with pytest.raises(UserError, match="cell fast's set: learning rate must be > 0"):  # when the grid is read
        parse_grid({"cells": [{"name": "baseline"}, {"name": "fast", "set": {"optim": {"lr": -1}}}]}, default_name="g")


def test_identical_cells_are_refused():
    grid = parse_grid(
        {"cells": [{"name": "baseline"}, {"name": "same", "set": {"wandb": {"project": "x"}}}]}, default_name="g"
    )
    with pytest.raises(UserError, match="describe the same run"):
        expand(grid)


def test_grid_show_cli(capsys, tmp_path):
    result = run_cli(["grid", "show", "smoke"], capsys)
    assert result.code == 0 and "grid smoke: 4 runs" in result.out
    bad = tmp_path / "bad.toml"
    bad.write_text("[base]\nepochs = \n")
    result = run_cli(["grid", "show", bad], capsys)
    assert result.code == 2 and "is not valid TOML" in result.err
    result = run_cli(["grid", "show", "nope"], capsys)
    assert result.code == 2 and "unknown grid 'nope'; known: ablation, fast, models, smoke" in result.err


def test_grid_show_from_another_folder_says_the_data_is_missing(tmp_path, monkeypatch, capsys):
    """A relative data.dir is relative to the folder cifar-hpc runs in: from elsewhere the data is not
    found, the run ids leave out its fingerprint, and grid show says so instead of listing them silently."""
    home = tmp_path / "project"
    write_grid(home, "mine", '[[cells]]\nname = "baseline"\n')
    grid = home / "mine.toml"
    grid.write_text(grid.read_text().replace(f'"{home / "data"}"', '"data"'))
    monkeypatch.chdir(home)
    here = run_cli(["grid", "show", grid], capsys)
    assert here.code == 0 and "no data found" not in here.err, here.err
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    away = run_cli(["grid", "show", grid], capsys)
    assert away.code == 0
    (warning,) = [line for line in away.err.splitlines() if "no data found" in line]
    assert f"no data found at data ({elsewhere / 'data'}" in warning and "relative to the folder" in warning
    assert run_ids(here.out) and run_ids(here.out).isdisjoint(run_ids(away.out))


def run_ids(shown: str) -> set[str]:
    """The run ids that start grid show's run lines."""
    return {words[0] for words in map(str.split, shown.splitlines()) if words and len(words[0]) == 12}
