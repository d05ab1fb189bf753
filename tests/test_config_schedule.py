"""Pure functions: config validation and identity, LR schedules, step counts."""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import assert_golden

from cifar_hpc.base.errors import UserError
from cifar_hpc.config import train_config
from cifar_hpc.config.settings import field_docs
from cifar_hpc.config.train_config import TrainConfig
from cifar_hpc.training.schedule import accumulation_factor, lr_factor, optimizer_steps
from cifar_hpc.training.tricks import resolutions


def test_default_config_and_run_id_are_pinned():
    """The run id names folders, W&B runs and checkpoints: it must not drift between versions."""
    cfg = TrainConfig()
    assert_golden(
        "default_config.json", json.dumps({"run_id": cfg.run_id, **cfg.to_dict()}, indent=2, sort_keys=True) + "\n"
    )


def test_all_tricks_resolutions_text():
    cfg = TrainConfig.from_dict({"tricks": {"lr_find": True, "swa": True, "early_stop": True}, "epochs": 20})
    assert_golden("resolutions_all_tricks.txt", "\n".join(resolutions(cfg)) + "\n")


def test_run_id_ignores_where_and_how_but_not_what():
    base = TrainConfig()
    assert TrainConfig(out_dir="/x", devices="4", num_nodes=2, batch_size=256).run_id == base.run_id
    assert (
        TrainConfig.from_dict({"data": {"dir": "/scratch/d", "num_workers": 3}, "wandb": {"mode": "offline"}}).run_id
        == base.run_id
    )
    assert TrainConfig(seed=1).run_id != base.run_id
    assert TrainConfig.from_dict({"tricks": {"swa": True}}).run_id != base.run_id
    assert len(base.run_id) == 12 and int(base.run_id, 16) >= 0


def test_accumulation_schedule_forms_agree():
    forms = ["0:1,4:2", {0: 1, 4: 2}, [[4, 2], [0, 1]]]
    schedules = {TrainConfig.from_dict({"tricks": {"accumulate": f}}).tricks.accumulate for f in forms}
    assert schedules == {((0, 1), (4, 2))}


@pytest.mark.parametrize(
    "bad",
    [
        {"epochs": -1},
        {"devices": "0"},
        {"devices": "two"},
        {"data": {"val_fraction": 1.0}},
        {"tricks": {"swa_epoch_start": 1.5}},
        {"optim": {"momentum": 1.0}},
    ],
)
def test_invalid_values_are_user_errors(bad):
    with pytest.raises(UserError):
        TrainConfig.from_dict(bad)


def test_onecycle_shape():
    total = 100
    factors = [lr_factor(s, total, "onecycle") for s in range(total + 1)]
    assert factors[0] == pytest.approx(1 / 25)
    assert max(factors) == pytest.approx(1.0) and factors.index(max(factors)) == 25
    assert factors[-1] == pytest.approx(1e-4)
    assert lr_factor(10_000, total, "onecycle") == factors[-1]  # past the end: holds, never raises
    assert lr_factor(50, total, "cosine") == pytest.approx(0.5) and lr_factor(7, total, "constant") == 1


def test_optimizer_steps_match_lightning_accumulation():
    assert accumulation_factor(0, {}) == 1
    assert [accumulation_factor(e, {0: 1, 2: 4}) for e in range(4)] == [1, 1, 4, 4]
    # 10 batches: factor 1 -> 10 steps; factor 4 -> 3 steps (4, 4 and the leftover 2)
    assert optimizer_steps(10, 4, {0: 1, 2: 4}) == 10 + 10 + 3 + 3


def test_every_config_field_is_documented_and_choices_are_literals():
    for cls in (
        TrainConfig,
        train_config.OptimConfig,
        train_config.AugmentConfig,
        train_config.TrickConfig,
        train_config.DataConfig,
        train_config.WandbConfig,
    ):
        assert set(field_docs(cls)) == {f.name for f in dataclasses.fields(cls)}, cls
    assert train_config.MODELS == ("resnet18", "resnet34") and train_config.WANDB_MODES == (
        "auto",
        "online",
        "offline",
        "disabled",
    )
    with pytest.raises(UserError, match="unknown W&B mode 'loud'"):
        TrainConfig.from_dict({"wandb": {"mode": "loud"}})
    with pytest.raises(UserError, match="wandb.tags has the wrong type"):
        TrainConfig.from_dict({"wandb": {"tags": "abc"}})  # not ('a', 'b', 'c')


def test_config_json_with_its_run_id_loads_back():
    cfg = TrainConfig.from_dict({"model": "resnet34", "tricks": {"swa": True, "accumulate": "0:1,2:2"}})
    written = json.loads(json.dumps({"run_id": cfg.run_id, **cfg.to_dict()}))  # as train.py writes config.json
    assert TrainConfig.from_dict(written) == cfg
    with pytest.raises(UserError, match="does not match"):
        TrainConfig.from_dict({**written, "seed": 5})


def test_batch_split_rule():
    train_config.check_batch_split(12, 4)
    with pytest.raises(UserError, match="batch size 10 is not divisible by the world size 4"):
        train_config.check_batch_split(10, 4)


def test_train_flags_name_real_settings_and_show_their_defaults():
    """`cifar-hpc train`'s flags are a table of dotted keys: each must be a setting and a parameter."""
    import inspect

    from cifar_hpc.cli.train import _KEYS, _help, train

    assert set(_KEYS) <= set(inspect.signature(train).parameters)
    for key in _KEYS.values():
        assert _help(key)  # resolves the key against the dataclasses
    assert _help("optim.lr") == "Peak learning rate (the LR finder, when on, replaces it). (optim.lr, default: 0.05)"
    assert _help("tricks.swa").endswith("(tricks.swa, default: off)")


def test_a_seed_is_one_of_numpys():
    """0 .. 2**32 - 1: Lightning's seed_everything turns any other seed into 0, so two "seeds" would be one run."""
    assert TrainConfig(seed=train_config.MAX_SEED).seed == 2**32 - 1
    for bad in (-1, 2**32):
        with pytest.raises(UserError, match=f"seed must be in 0..4294967295, got {bad}"):
            TrainConfig(seed=bad)
        with pytest.raises(UserError, match="seed must be in"):
            TrainConfig.from_dict({"seed": bad})


# --- SWA's LR: a fraction of the peak LR, and the run ids of runs that train as before ------------

# run ids and settings as cifar-hpc gave them before SWA's LR followed the peak LR (commit 9432db1)
OLD_IDS = {"default": "3304e18e031f", "+swa": "334076581b89", "lr4e-3": "190973f26d2a", "+swa lr0.2": "7fc40e5ded73"}
OLD_SWA_AT_LR4E3 = "ade72fb9611d"  # +swa at lr 4e-3: SWA raised the LR 2.5x, to the absolute 0.01
OLD_SWA_LR_FIND = "d7200d07a746"  # +swa+lr_find: SWA at 0.01 whatever the finder picked


def _config(**sections) -> TrainConfig:
    return TrainConfig.from_dict(sections)


def test_swa_anneals_to_a_fraction_of_the_peak_lr_unless_given_an_absolute_one():
    from cifar_hpc.training.tricks import swa_lr

    assert swa_lr(_config(tricks={"swa": True})) == pytest.approx(0.01)  # 0.2 x the default peak 0.05
    small = _config(tricks={"swa": True}, optim={"lr": 4e-3})
    assert swa_lr(small) == pytest.approx(8e-4)  # never above the peak: the row measures SWA alone
    assert swa_lr(small, peak_lr=0.1) == pytest.approx(0.02)  # the LR finder's pick is the peak
    assert swa_lr(_config(tricks={"swa": True, "swa_lr_factor": 0.5}, optim={"lr": 4e-3})) == pytest.approx(2e-3)
    assert swa_lr(_config(tricks={"swa": True, "swa_lrs": 0.01}, optim={"lr": 4e-3}), peak_lr=0.1) == 0.01
    with pytest.raises(UserError, match="swa_lr_factor must be > 0"):
        _config(tricks={"swa_lr_factor": 0})


def test_runs_that_train_as_before_keep_their_ids_and_the_others_get_new_ones():
    assert _config().run_id == OLD_IDS["default"]
    assert _config(tricks={"swa": True}).run_id == OLD_IDS["+swa"]  # 0.2 x 0.05 = 0.01, as before
    assert _config(optim={"lr": 4e-3}).run_id == OLD_IDS["lr4e-3"]  # SWA off: its LR does not count
    lr02 = _config(tricks={"swa": True, "swa_lr_factor": 0.05}, optim={"lr": 0.2})  # jobs/ablation.toml
    assert lr02.run_id == OLD_IDS["+swa lr0.2"]
    # SWA at another LR than before is another run: a resubmission trains it, never skips it as done
    small = _config(tricks={"swa": True}, optim={"lr": 4e-3})
    assert small.run_id != OLD_SWA_AT_LR4E3
    assert small.run_id == _config(tricks={"swa": True, "swa_lrs": 8e-4}, optim={"lr": 4e-3}).run_id  # same training
    assert _config(tricks={"swa": True, "swa_lrs": 0.01}, optim={"lr": 4e-3}).run_id == OLD_SWA_AT_LR4E3
    assert _config(tricks={"swa": True, "lr_find": True}).run_id != OLD_SWA_LR_FIND


def test_a_config_written_before_swa_lr_factor_loads_with_its_id_and_setting():
    from cifar_hpc.config.train_config import setting_of

    for name, sections in {"default": {}, "+swa": {"tricks": {"swa": True}}}.items():
        old = json.loads(json.dumps(_config(**sections).to_dict()))
        old["tricks"].pop("swa_lr_factor")
        old["tricks"]["swa_lrs"] = 0.01  # as an older cifar-hpc wrote config.json and result.json
        cfg = TrainConfig.from_dict({"run_id": OLD_IDS[name], **old})  # the recorded id is still its id
        assert cfg.tricks.swa_lrs == 0.01
        # its seeds and the seeds the new version trains are one row of the table
        assert setting_of(old) == setting_of(_config(**sections).to_dict())


def test_the_resolutions_say_what_swa_changed():
    notes = resolutions(_config(epochs=10, tricks={"swa": True}, optim={"lr": 4e-3}))
    assert notes[0] == (
        "swa: SWA from epoch 7 of 10 at 0.2 x the peak LR (0.0008); "
        "the main onecycle schedule spans the 7 epochs before"
    )
    given = resolutions(_config(epochs=10, tricks={"swa": True, "swa_lrs": 0.01}, optim={"lr": 4e-3}))
    assert given[0].startswith("swa: SWA from epoch 7 of 10 at swa_lrs 0.01 (2.5 x the peak LR 0.004)")
    found = resolutions(_config(epochs=10, tricks={"swa": True, "lr_find": True}), peak_lr=0.1)
    assert found[0].startswith("swa: SWA from epoch 7 of 10 at 0.2 x the peak LR (0.02)")
    assert "swa+lr_find: the found LR sets the main schedule's peak and SWA's LR (0.2 x it)" in found
