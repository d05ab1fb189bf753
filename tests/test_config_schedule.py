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
