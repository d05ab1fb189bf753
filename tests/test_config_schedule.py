"""Pure functions: config validation and identity, LR schedules, step counts."""

from __future__ import annotations

import json

import pytest

from cifar_hpc.config import TrainConfig
from cifar_hpc.errors import UserError
from cifar_hpc.schedule import accumulation_factor, lr_factor, optimizer_steps
from cifar_hpc.tricks import resolutions
from conftest import assert_golden

def test_default_config_and_run_id_are_pinned():
    """The run id names folders, W&B runs and checkpoints: it must not drift between versions."""
    cfg = TrainConfig()
    assert_golden("default_config.json", json.dumps({"run_id": cfg.run_id, **cfg.to_dict()}, indent=2, sort_keys=True) + "\n")


def test_all_tricks_resolutions_text():
    cfg = TrainConfig.from_dict({"tricks": {"lr_find": True, "swa": True, "early_stop": True}, "epochs": 20})
    assert_golden("resolutions_all_tricks.txt", "\n".join(resolutions(cfg)) + "\n")


def test_run_id_ignores_where_and_how_but_not_what():
    base = TrainConfig()
    assert TrainConfig(out_dir="/x", devices="4", num_nodes=2, batch_size=256).run_id == base.run_id
    assert TrainConfig.from_dict({"data": {"dir": "/scratch/d", "num_workers": 3}, "wandb": {"mode": "offline"}}).run_id == base.run_id
    assert TrainConfig(seed=1).run_id != base.run_id
    assert TrainConfig.from_dict({"tricks": {"swa": True}}).run_id != base.run_id
    assert len(base.run_id) == 12 and int(base.run_id, 16) >= 0


def test_accumulation_schedule_forms_agree():
    forms = ["0:1,4:2", {0: 1, 4: 2}, [[4, 2], [0, 1]]]
    schedules = {TrainConfig.from_dict({"tricks": {"accumulate": f}}).tricks.accumulate for f in forms}
    assert schedules == {((0, 1), (4, 2))}


@pytest.mark.parametrize("bad", [{"epochs": -1}, {"devices": "0"}, {"devices": "two"}, {"data": {"val_fraction": 1.0}},
                                 {"tricks": {"swa_epoch_start": 1.5}}, {"optim": {"momentum": 1.0}}])
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
