"""Overrides and filters of a grid (`--set`, `--cells`, `--models`, `--seeds`) on `grid show` and
`submit`, `grid list`, and `train --from-run`. Pure expansion and in-process CLI calls; nothing trains
(``--from-run`` resolves to the very config and folder ``--config`` would, whose resume/skip the
training tests cover)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
from conftest import run_cli, write_grid

from cifar_hpc.base.errors import UserError
from cifar_hpc.study.choose import narrow, reference_notes
from cifar_hpc.study.grid import expand, load_grid, parse_grid


def _ids(runs) -> dict[tuple, str]:
    return {(run.cell, run.config.model, run.config.seed): run.run_id for run in runs}


def test_filters_keep_each_runs_id(monkeypatch, tmp_path):
    """A run chosen through --cells/--models/--seeds is the run the whole grid has: same id, so a
    filtered submit skips what already finished. All four options combine."""
    monkeypatch.chdir(tmp_path)  # ids without a data fingerprint, the same for both expansions
    grid = load_grid("ablation")
    whole = _ids(expand(grid))
    chosen = narrow(grid, cells="+swa,full-clip", models="resnet34", seeds="1-2")
    assert _ids(expand(chosen)) == {
        key: whole[key]
        for key in whole
        if key[0] in ("+swa", "full-clip") and key[1] == "resnet34" and key[2] in (1, 2)
    }
    more = narrow(grid, cells="+swa", seeds="2-4")  # seeds outside the grid's: the old ones keep their ids
    assert {k: v for k, v in _ids(expand(more)).items() if k in whole} == {
        k: v for k, v in whole.items() if k[0] == "+swa" and k[2] == 2
    }
    short = narrow(grid, sets=["epochs=1", "optim.lr=0.1"], cells="+swa", models="resnet18", seeds="0")
    (run,) = expand(short)
    assert (run.config.epochs, run.config.optim.lr, run.config.tricks.swa) == (1, 0.1, True)
    assert run.run_id != whole[("+swa", "resnet18", 0)]  # another setting is another run
    assert run.run_id == _ids(expand(narrow(grid, sets=["epochs=1", "optim.lr=0.1"])))[("+swa", "resnet18", 0)]


def test_set_wins_over_a_cell_and_an_axis_key_replaces_the_axis():
    two = parse_grid(
        {"cells": [{"name": "baseline"}, {"name": "long", "set": {"epochs": 5, "optim": {"lr": 0.3}}}]},
        default_name="g",
    )
    forced = expand(narrow(two, sets=["optim.lr=0.05"]))
    assert [(r.cell, r.config.epochs, r.config.optim.lr) for r in forced] == [("baseline", 10, 0.05), ("long", 5, 0.05)]
    grid = load_grid("smoke")
    seeded = narrow(grid, sets=["seed=3"])
    assert seeded.axes["seed"] == [3] and [r.config.seed for r in expand(seeded)] == [3, 3]
    assert _ids(expand(seeded)) == _ids(expand(narrow(grid, seeds="3")))
    with pytest.raises(UserError, match="--set seed=3 and --seeds both choose the seeds"):
        narrow(grid, sets=["seed=3"], seeds="0-1")
    epochs = dataclasses.replace(grid, axes={**grid.axes, "epochs": [1, 2]})
    assert (
        narrow(epochs, sets=["epochs=4"]).axes["epochs"] == [4] and len(expand(narrow(epochs, sets=["epochs=4"]))) == 4
    )


def test_a_set_that_makes_two_cells_the_same_is_refused_by_name():
    with pytest.raises(UserError) as same:
        expand(narrow(load_grid("smoke"), sets=["augment.flip=true"], cells="+flip"))
    message = str(same.value)
    assert "cells 'baseline' and '+flip' describe the same run" in message
    assert "--set augment.flip overrides what tells them apart" in message
    with pytest.raises(UserError, match="cells 'baseline' and '\\+crop' describe the same run.*--set augment.crop"):
        expand(narrow(load_grid("ablation"), sets=["augment.crop=true"]))


def test_a_left_out_reference_is_noted_once():
    grid = load_grid("ablation")
    assert reference_notes(narrow(grid, cells="baseline,+swa")) == []
    notes = reference_notes(narrow(grid, cells="+swa,+clip,full-swa"))
    assert len(notes) == 2 and notes[0].startswith("note: --cells leaves out baseline, the reference of +swa, +clip:")
    assert "full, the reference of full-swa" in notes[1]


BAD = {
    "unknown key": (
        ["--set", "optim.lrr=0.1"],
        "--set optim.lrr=0.1: unknown setting optim.lrr (did you mean optim.lr?)",
    ),
    "wrong type": (["--set", "epochs=many"], "--set epochs=many: setting epochs has the wrong type"),
    "bad choice": (["--set", "data.loader=dali"], "--set data.loader=dali: unknown loader 'dali'"),
    "label": (["--set", "cell=x"], "--set cell=x: cell is given by the grid"),
    "unknown cell": (
        ["--cells", "swa"],
        "--cells: grid ablation has no cell 'swa' (did you mean '+swa'?); valid: baseline,",
    ),
    "unknown model": (["--models", "resnet50"], "--models: unknown model 'resnet50' (did you mean 'resnet34'?)"),
    "bad seeds": (["--seeds", "2-1"], "range 2-1 goes down"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_overrides_are_one_line_and_submit_nothing(case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args, message = BAD[case]
    shown = run_cli(["grid", "show", "ablation", *args], capsys)
    assert shown.code == 2 and message in shown.err and len(shown.err.strip().splitlines()) == 1, shown.err
    submitted = run_cli(["submit", "--grid", "ablation", "--executor", "local", *args], capsys)
    assert submitted.code == 2 and message in submitted.err and not (tmp_path / "runs").exists()


def test_grid_show_and_submit_dry_run_take_all_four(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    filters = ["--set", "epochs=1", "--cells", "+flip", "--models", "resnet18", "--seeds", "0-2"]
    shown = run_cli(["grid", "show", "smoke", *filters], capsys)
    assert shown.code == 0, shown.err
    assert shown.out.startswith("grid smoke: 3 runs = 1 of 2 cells x 1 model x 3 seeds\n")
    assert "--set (every run): epochs=1" in shown.out and "note: --cells leaves out baseline" in shown.err
    ids = [line.split()[0] for line in shown.out.splitlines()[4:]]
    config = json.loads(run_cli(["grid", "show", "smoke", *filters, "--print-config"], capsys).out)
    assert [c["run_id"] for c in config] == ids and {c["epochs"] for c in config} == {1}
    grid = write_grid(
        tmp_path,
        "four",
        '[[cells]]\nname = "baseline"\n[[cells]]\nname = "+flip"\nset = { augment = { flip = true } }\n',
    )
    dry = run_cli(["submit", "--grid", grid, "--executor", "local", "--dry-run", *filters], capsys)
    assert dry.code == 0 and "3 runs — 0 completed" in dry.out and "would submit 3" in dry.out, dry.out + dry.err
    assert dry.out.count("would run ") == 3 and "+flip/resnet18/seed 2 here" in dry.out


def test_grid_list_names_every_grid_with_its_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "mine.toml").write_text('description = "my study"\n[axes]\nseed = [0, 1, 2]\n')
    (tmp_path / "jobs" / "broken.toml").write_text("[axes\n")
    listed = run_cli(["grid", "list"], capsys)
    assert listed.code == 0, listed.err
    lines = {line.split()[0]: " ".join(line.split()[1:]) for line in listed.out.splitlines()}
    assert lines["mine"] == "3 runs my study" and lines["ablation"].startswith("102 runs Trick ablation")
    assert lines["broken"].startswith("0 runs INVALID: grid file jobs/broken.toml is not valid TOML")


def _write_run(folder, capsys, *args):
    printed = run_cli(["train", *args, "--print-config"], capsys)
    assert printed.code == 0, printed.err
    config = json.loads(printed.out)
    run = folder / config["run_id"]
    run.mkdir(parents=True)
    (run / "config.json").write_text(printed.out)
    return config


def test_from_run_reproduces_a_runs_config_and_overrides_make_another(tmp_path, tiny_data, capsys):
    """Found by id prefix under --results-dir; unchanged it is that run (its folder); with a flag it is
    another run in its own folder."""
    study = tmp_path / "runs" / "g"
    args = ["--data-dir", tiny_data, "--epochs", "1", "--batch-size", "8", "--num-workers", "0"]
    first = _write_run(study, capsys, *args, "--out", study / "x")  # out_dir as in a study
    other = _write_run(study, capsys, *args, "--seed", "7")
    results = ["--results-dir", tmp_path / "runs"]
    same = run_cli(["train", "--from-run", first["run_id"][:6], *results, "--print-config"], capsys)
    assert same.code == 0 and json.loads(same.out) == first, same.err
    changed = json.loads(
        run_cli(["train", "--from-run", first["run_id"], *results, "--lr", "0.07", "--print-config"], capsys).out
    )
    assert changed["run_id"] != first["run_id"] and changed["optim"]["lr"] == 0.07 and changed["epochs"] == 1
    assert changed["out_dir"] == str(study.resolve() / changed["run_id"])  # in the run's own study
    shutil.copytree(study / first["run_id"], tmp_path / "runs" / "h" / first["run_id"])  # the same run twice
    unknown = "f" * 12 if first["run_id"][0] != "f" else "0" * 12
    for wrong, message in [
        (unknown, f"no run {unknown!r} in {tmp_path / 'runs'} (looked in {study}, {tmp_path / 'runs' / 'h'};"),
        ("zz", "a run id is hexadecimal"),
        (first["run_id"], f"run {first['run_id']} is in 2 studies: g/{first['run_id']}, h/{first['run_id']}"),
        (first["run_id"][:6], "is in 2 studies"),
    ]:
        refused = run_cli(["train", "--from-run", wrong, *results, "--print-config"], capsys)
        assert refused.code == 2 and message in refused.err and len(refused.err.strip().splitlines()) == 1
    picked = run_cli(["train", "--from-run", first["run_id"], "--results-dir", study, "--print-config"], capsys)
    assert picked.code == 0 and json.loads(picked.out) == first, picked.err  # one study named: its copy
    assert other["run_id"] != first["run_id"]
    both = run_cli(["train", "--from-run", first["run_id"], "--config", study / "x.toml", *results], capsys)
    assert both.code == 2 and "give --config or --from-run, not both" in both.err


# --- one run's settings: defaults < --config FILE < flags < --set (cifar_hpc.config.resolve) ----------


def test_settings_precedence_is_defaults_then_file_then_flags_then_set(tmp_path):
    from cifar_hpc.config.resolve import resolve
    from cifar_hpc.config.train_config import TrainConfig

    assert resolve(None, {}, []) == TrainConfig()
    config = tmp_path / "c.toml"
    config.write_text("epochs = 3\nseed = 1\n[optim]\nlr = 0.2\nschedule = 'cosine'\n")
    cfg = resolve(config, {"seed": 2, "optim.lr": 0.3}, ["optim.lr=0.4", "optim.lr=0.5"])
    assert (cfg.epochs, cfg.seed, cfg.optim.lr, cfg.optim.schedule) == (3, 2, 0.5, "cosine")
    assert cfg.batch_size == TrainConfig().batch_size  # what nobody set keeps its default


def test_a_runs_config_json_is_checked_then_its_id_dropped():
    from cifar_hpc.config.resolve import file_settings
    from cifar_hpc.config.train_config import TrainConfig

    cfg = TrainConfig(epochs=2)
    written = json.loads(json.dumps({"run_id": cfg.run_id, **cfg.to_dict()}))  # as config.json holds it
    assert file_settings(written) == {k: v for k, v in written.items() if k != "run_id"}
    assert file_settings({"epochs": 2}) == {"epochs": 2}
    with pytest.raises(UserError, match="does not match these settings"):
        file_settings({**written, "epochs": 3})


def test_other_data_than_the_files_drops_its_fingerprint():
    from cifar_hpc.config.resolve import nested, with_flags, with_sets, without_stale_fingerprint

    before = {"data": {"dir": "a", "fingerprint": "generated-0011223344556677"}}
    assert nested("data.dir", "b") == {"data": {"dir": "b"}}
    moved = with_sets(with_flags(before, {"data.dir": "b"}), ["data.num_workers=2"])
    assert without_stale_fingerprint(before, moved) == {"data": {"dir": "b", "num_workers": 2}}
    same = with_flags(before, {"epochs": 4})
    assert without_stale_fingerprint(before, same) == same  # the same data keeps it


def test_a_config_file_that_cannot_be_read_is_one_line(tmp_path):
    from cifar_hpc.config.resolve import read_config_file

    for text, message in [("{", "is not valid JSON"), ("[1, 2]", "must hold a JSON object"), (None, "cannot read")]:
        path = tmp_path / "c.json"
        path.unlink(missing_ok=True)
        if text is not None:
            path.write_text(text)
        with pytest.raises(UserError, match=message):
            read_config_file(path)
    (tmp_path / "c.toml").write_text("seed = 4\n")
    assert read_config_file(tmp_path / "c.toml") == {"seed": 4}


def test_a_reproduced_run_keeps_its_folder_only_when_unchanged(tmp_path):
    from cifar_hpc.config.resolve import own_folder
    from cifar_hpc.config.train_config import TrainConfig

    cfg = TrainConfig(epochs=2, out_dir=str(tmp_path / "study" / "x"))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"run_id": cfg.run_id, **cfg.to_dict()}))
    assert own_folder(cfg, config, tmp_path, out_given=False) == cfg
    other = cfg.replace(epochs=3)
    assert own_folder(other, config, tmp_path, out_given=False).out_dir == str(tmp_path / other.run_id)
    assert own_folder(other, config, tmp_path, out_given=True) == other
