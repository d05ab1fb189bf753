"""A grid's design: each comparison's reference (``compare_to``), cells that train the same thing
after the trick clash resolutions, comparisons that change more than they say, and more seeds for a
study without new ids for the old ones."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import read_json, run_cli, write_grid

from cifar_hpc.base.errors import UserError
from cifar_hpc.config.train_config import TrainConfig
from cifar_hpc.study.design import comparison_note, reference_of
from cifar_hpc.study.grid import (
    expand,
    load_grid,
    override_axes,
    parse_grid,
    parse_seeds,
    render_runs,
    run_axes,
)
from cifar_hpc.study.plan import PlannedRun
from cifar_hpc.training.tricks import TRICKS, effective

# --- compare_to -----------------------------------------------------------------------------------


def _cells(*cells: dict) -> dict:
    return {"cells": [{"name": "baseline"}, *cells]}


def test_each_cell_names_its_reference():
    grid = parse_grid(
        _cells({"name": "a", "set": {"tricks": {"clip": True}}}, {"name": "b", "compare_to": "a"}),
        default_name="g",
    )
    assert [reference_of(grid, name) for name in ("baseline", "a", "b")] == [None, "baseline", "a"]
    assert [cell.compare_to for cell in grid.cells] == [None, None, "a"]


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        ([{"name": "a", "compare_to": "nope"}], "cell 'a': compare_to 'nope' is not one of the cells: a, baseline"),
        ([{"name": "a", "compare_to": "a"}], "cell 'a': compare_to names the cell itself"),
        (
            [{"name": "a", "compare_to": "b"}, {"name": "b", "compare_to": "a"}],
            "compare_to goes round in a circle: a -> b -> a",
        ),
        ([{"name": "a", "compare_to": 3}], "cell 'a': compare_to must be a cell name"),
    ],
)
def test_bad_references_are_one_line(cells, message):
    with pytest.raises(UserError) as error:
        parse_grid(_cells(*cells), default_name="g")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_baseline_cell_is_the_reference_and_has_none():
    raw = {"cells": [{"name": "baseline", "compare_to": "a"}, {"name": "a"}]}
    with pytest.raises(UserError, match="baseline cell 'baseline' is the reference of the others"):
        parse_grid(raw, default_name="g")


def test_ablation_compares_additions_to_baseline_and_removals_to_full():
    grid = load_grid("ablation")
    references = {cell.name: reference_of(grid, cell.name) for cell in grid.cells}
    assert references["baseline"] is None and references["full"] == "baseline"
    assert all(references[f"+{trick}"] == "baseline" for trick in TRICKS)
    assert {name: ref for name, ref in references.items() if name.startswith("full-")} == {
        f"full-{trick}": "full" for trick in TRICKS if trick != "early_stop"
    }


# --- effective training ---------------------------------------------------------------------------


def test_effective_switches_early_stopping_off_under_swa():
    both = TrainConfig.from_dict({"tricks": {"swa": True, "early_stop": True}})
    assert effective(both).tricks.early_stop is False and effective(both).tricks.swa is True
    alone = TrainConfig.from_dict({"tricks": {"early_stop": True}})
    assert effective(alone) is alone  # nothing to resolve: the same config (and its cached id)


def test_callbacks_follow_the_effective_config(tmp_path):
    from lightning.pytorch.callbacks import EarlyStopping, StochasticWeightAveraging

    from cifar_hpc.training.callbacks import build_callbacks

    def kinds(tricks: dict) -> set[type]:  # Lightning's kinds, whatever subclass carries them out
        built = build_callbacks(TrainConfig.from_dict({"tricks": tricks}), tmp_path)
        return {kind for cb in built for kind in type(cb).__mro__}

    assert EarlyStopping in kinds({"early_stop": True})
    assert EarlyStopping not in kinds({"early_stop": True, "swa": True})
    assert StochasticWeightAveraging in kinds({"early_stop": True, "swa": True})


def test_cells_that_train_the_same_thing_are_refused():
    grid = parse_grid(
        _cells(
            {"name": "full", "set": {"tricks": {"swa": True, "early_stop": True}}},
            {"name": "full-early_stop", "set": {"tricks": {"swa": True}}},
        ),
        default_name="g",
    )
    with pytest.raises(UserError) as error:
        expand(grid)
    assert str(error.value) == (
        "grid g: cells 'full' and 'full-early_stop' train the same thing: swa on switches early_stop off; drop one"
    )


def test_the_old_ablation_design_is_refused():
    """The generator before this fix: full with every trick on, full-<trick> for each."""
    tricks = {"swa": True, "early_stop": True, "clip": True}
    old = _cells(
        {"name": "full", "set": {"tricks": tricks}},
        {"name": "full-early_stop", "compare_to": "full", "set": {"tricks": {**tricks, "early_stop": False}}},
    )
    with pytest.raises(UserError, match="cells 'full' and 'full-early_stop' train the same thing"):
        expand(parse_grid(old, default_name="g"))


# --- confounded comparisons -----------------------------------------------------------------------


def _run(cell: str, **tricks) -> PlannedRun:
    return PlannedRun(cell, TrainConfig.from_dict({"cell": cell, "tricks": tricks}))


def test_a_comparison_that_changes_what_it_says_has_no_note():
    assert comparison_note(_run("+swa", swa=True), _run("baseline")) is None
    assert comparison_note(_run("full-swa", clip=True), _run("full", swa=True, clip=True)) is None


def test_a_removal_that_re_enables_another_trick_is_confounded():
    note = comparison_note(_run("full-swa", early_stop=True), _run("full", swa=True, early_stop=True))
    assert note == "confounded: also changes tricks.early_stop (swa on switches early_stop off)"


def test_a_change_that_a_resolution_undoes_is_named():
    note = comparison_note(_run("swa+early_stop", swa=True, early_stop=True), _run("+swa", swa=True))
    assert note == "no effect: tricks.early_stop=True is undone (swa on switches early_stop off)"


def test_grid_show_names_each_reference_and_the_confounded_ones():
    grid = parse_grid(
        _cells(
            {"name": "full", "set": {"tricks": {"swa": True, "early_stop": True}}},
            {"name": "full-swa", "compare_to": "full", "set": {"tricks": {"early_stop": True}}},
        )
        | {"axes": {"seed": [0]}},
        default_name="g",
    )
    text = render_runs(grid, expand(grid))
    lines = text.splitlines()
    assert lines[2].split()[:5] == ["run_id", "cell", "model", "seed", "vs"]
    row = {line.split()[1]: line for line in lines[3:]}
    assert row["full-swa"].split()[4] == "full" and row["full"].split()[4] == "baseline"
    assert "confounded: also changes tricks.early_stop" in row["full-swa"]
    assert "no effect: tricks.early_stop=True is undone" in row["full"]
    assert row["baseline"].split()[4] == "-"


# --- an ablation of few tricks ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tricks", "stand_ins"),
    [
        # two tricks in the recipe: the recipe minus one is the other alone
        (["rotate", "swa"], {"full-rotate": "+swa", "full-swa": "+rotate"}),
        (["rotate", "swa", "early_stop"], {"full-rotate": "+swa", "full-swa": "+rotate"}),
        (["swa", "early_stop", "clip"], {"full-swa": "+clip", "full-clip": "+swa"}),
        # one: the recipe is the trick alone, the recipe minus it the baseline
        (["swa"], {"full": "+swa", "full-swa": "baseline"}),
        (["swa", "early_stop"], {"full": "+swa", "full-swa": "baseline"}),
    ],
)
def test_an_ablation_of_few_tricks_runs_each_setting_once_and_says_which_cell_stands_for_which(tricks, stand_ins):
    grid = parse_grid({"ablation": {"tricks": tricks}, "axes": {"seed": [0]}}, default_name="g", source="g.toml")
    runs = expand(grid)  # the generator's own cells are never refused as "the same run"
    names = [cell.name for cell in grid.cells]
    assert not set(stand_ins) & set(names) and set(stand_ins.values()) <= set(names)
    assert len({run.run_id for run in runs}) == len(runs) == len(names)
    assert "full" in names or "full" in stand_ins
    (note,) = grid.notes  # one line, naming each cell that stands for another
    assert note.startswith("note: g.toml: [ablation]") and "\n" not in note
    for dropped, kept in stand_ins.items():
        assert f"{kept} = {dropped}" in note


def test_a_cell_compared_with_a_merged_ablation_cell_is_compared_with_the_cell_that_stands_for_it():
    raw = {
        "ablation": {"tricks": ["rotate", "swa"]},
        "cells": [{"name": "swa+clip", "compare_to": "full-rotate", "set": {"tricks": {"swa": True, "clip": True}}}],
    }
    grid = parse_grid(raw, default_name="g")
    assert reference_of(grid, "swa+clip") == "+swa"


def test_an_ablation_of_many_tricks_is_unchanged_and_says_nothing():
    grid = parse_grid({"ablation": {"tricks": ["crop", "flip", "swa"]}}, default_name="g")
    assert [cell.name for cell in grid.cells] == [
        "baseline",
        "+crop",
        "+flip",
        "+swa",
        "full",
        "full-crop",
        "full-flip",
        "full-swa",
    ]
    assert grid.notes == ()


def test_a_users_own_cell_that_repeats_a_generated_one_is_still_refused():
    raw = {
        "ablation": {"tricks": ["rotate", "swa"]},
        "cells": [{"name": "rot", "set": {"augment": {"crop": False, "flip": False, "rotate": True}}}],
    }
    with pytest.raises(UserError, match="cells '\\+rotate' and 'rot' describe the same run"):
        expand(parse_grid(raw, default_name="g"))


def test_grid_show_and_submit_dry_run_print_the_merge_once(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = write_grid(tmp_path, "few", '[ablation]\ntricks = ["rotate", "swa"]\n')
    shown = run_cli(["grid", "show", grid], capsys)
    assert shown.code == 0, shown.err
    assert shown.err.count("[ablation]") == 1 and "+swa = full-rotate" in shown.err
    assert "grid few: 4 runs = 4 cells" in shown.out and "full-rotate" not in shown.out
    dry = run_cli(["submit", "--grid", grid, "--executor", "local", "--dry-run"], capsys)
    assert dry.code == 0, dry.err
    assert (dry.out + dry.err).count("+swa = full-rotate") == 1


# --- the shipped ablation grid --------------------------------------------------------------------


def test_shipped_ablation_wastes_nothing_and_confounds_nothing():
    grid = load_grid("ablation")
    runs = expand(grid)
    cells = Counter(run.cell for run in runs)
    assert len(cells) == 17 and set(cells.values()) == {6} and len(runs) == 102
    assert "full-early_stop" not in cells and "+early_stop" in cells
    assert len({effective(run.config).run_id for run in runs}) == len(runs)  # no two train the same thing
    by_id = {(run.cell, run.config.model, run.config.seed): run for run in runs}
    for run in runs:
        ref = reference_of(grid, run.cell)
        if ref is not None:
            assert comparison_note(run, by_id[(ref, run.config.model, run.config.seed)]) is None, run.cell
    full = by_id[("full", "resnet18", 0)].config
    assert full.tricks.swa and not full.tricks.early_stop  # written as trained: SWA wins
    assert not by_id[("full-swa", "resnet18", 0)].config.tricks.early_stop


# --- more seeds -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "seeds"),
    [("0-9", list(range(10))), ("0,3,7", [0, 3, 7]), ("0-2,5", [0, 1, 2, 5]), (" 4 ", [4]), ("3-3", [3])],
)
def test_seed_specs(spec, seeds):
    assert parse_seeds(spec) == seeds


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "--seeds needs seeds"),
        ("a-b", "--seeds 'a-b': 'a-b' is not a seed or a range"),
        ("5-2", "--seeds '5-2': range 5-2 goes down"),
        ("0,,1", "--seeds '0,,1': empty item"),
        ("0-2,1", "--seeds '0-2,1': seed 1 is given twice"),
        ("-1", "--seeds '-1': '-1' is not a seed or a range"),
    ],
)
def test_bad_seed_specs_are_one_line(spec, message):
    with pytest.raises(UserError) as error:
        parse_seeds(spec)
    assert message in str(error.value)


def test_more_seeds_keep_the_old_ids():
    grid = load_grid("smoke")
    old = {(r.cell, r.config.seed): r.run_id for r in expand(grid)}
    more = override_axes(grid, {"seed": parse_seeds("0-4")})
    new = {(r.cell, r.config.seed): r.run_id for r in expand(more)}
    assert len(new) == 2 * 5 and {key: new[key] for key in old} == old
    assert [r.run_id for r in expand(grid, axes_override={"seed": [0, 1, 2, 3, 4]})] == [r.run_id for r in expand(more)]
    assert render_runs(more, expand(more)).startswith("grid smoke: 10 runs = 2 cells x 1 model x 5 seeds\n")


def test_axes_override_is_validated():
    grid = load_grid("smoke")
    with pytest.raises(UserError, match="unknown axis 'optim'"):
        override_axes(grid, {"optim": ["adam"]})
    with pytest.raises(UserError, match="axis 'seed' must be a non-empty list"):
        override_axes(grid, {"seed": []})


def test_run_axes_name_everything_but_the_seed():
    grid = parse_grid({"axes": {"seed": [0], "epochs": [1, 2]}}, default_name="g")
    assert [run_axes(grid, run) for run in expand(grid)] == [
        {"model": "resnet18", "epochs": 1},
        {"model": "resnet18", "epochs": 2},
    ]


def test_grid_show_and_submit_take_seeds(tmp_path, monkeypatch, capsys):
    shown = run_cli(["grid", "show", "smoke", "--seeds", "0-9"], capsys)
    assert shown.code == 0 and "grid smoke: 20 runs = 2 cells x 1 model x 10 seeds" in shown.out
    bad = run_cli(["grid", "show", "smoke", "--seeds", "9-0"], capsys)
    assert bad.code == 2 and bad.err.count("\n") == 1 and "range 9-0 goes down" in bad.err

    monkeypatch.chdir(tmp_path)
    grid = write_grid(
        tmp_path,
        "seeds",
        '[[cells]]\nname = "baseline"\n[[cells]]\nname = "+flip"\nset = { augment = { flip = true } }\n',
        seeds="[0, 5]",  # replaced by --seeds below
    )
    first = run_cli(["submit", "--grid", grid, "--executor", "local", "--seeds", "0-1"], capsys)
    assert first.code == 0 and "ran 4 runs here: 4 completed" in first.out, first.out + first.err
    manifest = read_json(tmp_path / "runs" / "seeds" / "study.json")
    entries = {(entry["cell"], entry["seed"]): entry for entry in manifest["runs"]}
    assert set(entries) == {(cell, seed) for cell in ("baseline", "+flip") for seed in (0, 1)}
    assert entries[("+flip", 1)]["axes"] == {"model": "resnet18"} and entries[("+flip", 1)]["compare_to"] == "baseline"
    assert entries[("baseline", 0)]["compare_to"] is None

    more = run_cli(["submit", "--grid", grid, "--executor", "local", "--seeds", "0-2", "--dry-run"], capsys)
    assert more.code == 0 and "6 runs — 4 completed" in more.out and "would submit 2" in more.out, more.out
    same = run_cli(["submit", "--grid", grid, "--executor", "local", "--seeds", "0,1", "--dry-run"], capsys)
    assert same.code == 0 and "would submit 0" in same.out
    wrong = run_cli(["submit", "--grid", grid, "--seeds", "x", "--dry-run"], capsys)
    assert wrong.code == 2 and "--seeds 'x'" in wrong.err


def test_grid_show_text_with_an_axis_and_notes_is_pinned(monkeypatch, tmp_path):
    from conftest import assert_golden

    monkeypatch.chdir(tmp_path)  # ids without the data's fingerprint
    grid = parse_grid(
        {
            "axes": {"seed": [0], "epochs": [1, 2]},
            "cells": [
                {"name": "baseline"},
                {"name": "full", "set": {"tricks": {"swa": True, "clip": True, "early_stop": True}}},
                {"name": "full-swa", "compare_to": "full", "set": {"tricks": {"clip": True, "early_stop": True}}},
                {"name": "full-clip", "compare_to": "full", "set": {"tricks": {"swa": True, "early_stop": True}}},
            ],
        },
        default_name="design",
    )
    assert_golden("grid_show_design.txt", render_runs(grid, expand(grid)))
