"""`cifar-hpc train` end to end on CPU, with real Lightning, real files and W&B offline.

Data is generated (learnable, CIFAR-10's on-disk format): accuracy figures here are about the
generated set, not CIFAR-10.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from conftest import read_json, run_cli, run_console_script
from wandb_offline import read_run

from cifar_hpc.config.train_config import TrainConfig
from cifar_hpc.training.schedule import optimizer_steps
from cifar_hpc.training.train import run

pytestmark = pytest.mark.slow

# 36 training images after the validation split, 3 batches of 12 per epoch
TINY = {"epochs": 3, "batch_size": 12, "data": {"num_workers": 0, "stage": False}, "wandb": {"mode": "disabled"}}
PLAIN_AUGMENT = {"crop": False, "flip": False, "rotate": False}


def tiny_config(data_dir: Path, out: Path, **sections) -> TrainConfig:
    values = {**TINY, "out_dir": str(out), "data": {**TINY["data"], "dir": str(data_dir)}}
    for key, value in sections.items():
        values[key] = {**values.get(key, {}), **value} if isinstance(value, dict) else value
    return TrainConfig.from_dict(values)


def logged(out: Path, column: str) -> list[float]:
    """Values Lightning logged to the run's CSV log under ``column``, in order."""
    with open(out / "logs" / "metrics.csv") as handle:
        return [float(row[column]) for row in csv.DictReader(handle) if row.get(column)]


def test_learns_on_generated_data_and_logs_to_wandb_offline(learn_data, tmp_path, capsys):
    out = tmp_path / "run"
    # 5 epochs: after 3 (27 steps) BatchNorm's running statistics still lag on some CPUs (test_acc 0.30 on
    # an AMD EPYC where an Intel Xeon passed); after 5 it reached 0.90 on the EPYC, far from the threshold
    result = run_cli(
        [
            "train",
            "--data-dir",
            learn_data,
            "--out",
            out,
            "--epochs",
            "5",
            "--batch-size",
            "30",
            "--num-workers",
            "0",
            "--no-stage",
            "--wandb-group",
            "learn-test",
        ],
        capsys,
    )
    assert result.code == 0, result.err
    assert "GENERATED data" in result.out and str(out / "result.json") in result.out
    res = read_json(out / "result.json")
    assert res["status"] == "completed" and res["data"] == "generated"
    assert res["test_acc"] >= 0.4, (
        f"10 classes: chance is 0.1, a learning ResNet-18 gets far above; got {res['test_acc']}"
    )
    assert res["best_val_acc"] >= 0.4
    assert res["epochs_run"] == 5 and res["train_images_per_s"] > 0 and res["wall_s"] > 0
    assert res["gpu_hours"] == 0 and res["gpu_util_mean"] is None  # CPU: no GPU, no NVML
    assert res["versions"]["torch"] and res["hosts"]

    wandb_run = read_run(out, run_id=res["run_id"])
    assert wandb_run.run_id == res["run_id"] and wandb_run.group == "learn-test"
    assert wandb_run.config["model"] == "resnet18" and wandb_run.config["run_id"] == res["run_id"]
    assert wandb_run.config["optim"]["name"] == "sgd"
    val_accs = [row["val_acc"] for row in wandb_run.history if "val_acc" in row]
    assert len(val_accs) == 5 and max(val_accs) == pytest.approx(res["best_val_acc"], abs=1e-6)
    assert any("lr-SGD" in row for row in wandb_run.history)


def test_device_loader_trains_end_to_end(tiny_data, tmp_path):
    """The on-device loader through the real Trainer (sanity check, DDP-style sharding, validation, test)."""
    res = run(
        tiny_config(tiny_data, tmp_path / "device", epochs=2, augment={"rotate": True}, data={"loader": "device"})
    )
    assert res["status"] == "completed" and res["lightning"]["global_step"] == 2 * 3
    assert res["config"]["data"]["loader"] == "device" and 0 <= res["test_acc"] <= 1


@pytest.mark.parametrize("trick", ["crop", "flip", "rotate", "lr_find", "swa", "accumulate", "clip", "early_stop"])
def test_each_trick_alone(trick, tiny_data, tmp_path, caplog):
    out = tmp_path / trick
    tricks = {
        "lr_find": {"lr_find": True},
        "swa": {"swa": True},
        "accumulate": {"accumulate": "0:1,1:2"},
        "clip": {"clip": True},
        "early_stop": {"early_stop": True, "early_stop_patience": 1},
    }.get(trick, {})
    augment = {**PLAIN_AUGMENT, **({trick: True} if trick in PLAIN_AUGMENT else {})}
    optim = {"schedule": "constant"}
    if trick == "early_stop":
        optim["lr"] = 1e-9  # nothing is learnt, val_acc cannot improve: the stop must come after patience
    sizes = {"epochs": 3}
    if trick == "early_stop":
        sizes = {"epochs": 6}
    elif trick == "lr_find":  # Lightning's pick skips the first 10 points of the sweep: give it 24
        sizes = {"epochs": 4, "batch_size": 6}
    cfg = tiny_config(tiny_data, out, augment=augment, tricks=tricks, optim=optim, **sizes)
    res = run(cfg)
    assert res["status"] == "completed", res["error"]
    assert res["tricks"] == [trick]
    did = res["lightning"]
    assert Path(did["best_checkpoint"]).exists() and Path(did["last_checkpoint"]).exists()
    if trick == "lr_find":
        assert res["lr_found"] and (out / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        curve = read_json(out / "lr_find.json")
        assert len(curve["lr"]) == len(curve["loss"]) > 5 and curve["lr_found"] == res["lr_found"]
        # 24 steps is far from Lightning's default 100: said once in the log, kept in the result and the curve
        said = [r.getMessage() for r in caplog.records if "LR finder swept only" in r.getMessage()]
        assert len(said) == 1 and "swept only 24 steps" in said[0] and f"lr={res['lr_found']:.3g}" in said[0]
        assert res["lr_find_warning"] == said[0] == curve["warning"] and curve["sweep_steps"] == 24
        # the plot's title (also in the PNG's text metadata) names the chosen LR
        assert f"chosen lr = {res['lr_found']:.3g} (24-step sweep".encode() in (out / "lr_find.png").read_bytes()
        # the optimizer really trained with the pick (constant schedule: every step at the found LR)
        assert logged(out, "lr-SGD") and all(lr == pytest.approx(res["lr_found"]) for lr in logged(out, "lr-SGD"))
    elif trick == "swa":
        assert did["swa_applied"] is True and res["test_weights"] == "swa"
        assert (out / "checkpoints" / "swa.ckpt").exists()
        assert logged(out, "lr-SGD")[-1] == pytest.approx(did["swa_lr"]) and did["swa_lr"] == pytest.approx(0.2 * 0.05)
    elif trick == "accumulate":
        assert did["accumulation_by_epoch"] == {"0": 1, "1": 2, "2": 2}
        assert did["global_step"] == optimizer_steps(3, 3, {0: 1, 1: 2}) == 3 + 2 + 2
    elif trick == "clip":
        assert did["gradient_clip_val"] == 0.5
    elif trick == "early_stop":
        assert res["stopped_epoch"] is not None and res["epochs_run"] < 6
    else:
        assert did["gradient_clip_val"] is None and did["swa_applied"] is None and res["lr_found"] is None
        assert res["lr_find_warning"] is None


def test_all_tricks_together(tiny_data, tmp_path):
    out = tmp_path / "all"
    cfg = tiny_config(
        tiny_data,
        out,
        epochs=4,
        batch_size=6,
        augment={"rotate": True},
        tricks={"lr_find": True, "swa": True, "accumulate": "0:1,2:2", "clip": True, "early_stop": True},
    )
    res = run(cfg)
    assert res["status"] == "completed", res["error"]
    assert res["tricks"] == ["crop", "flip", "rotate", "lr_find", "swa", "accumulate", "clip", "early_stop"]
    did = res["lightning"]
    assert did["swa_applied"] is True and res["test_weights"] == "swa"
    assert res["lr_found"] is not None and did["gradient_clip_val"] == 0.5
    assert [did["accumulation_by_epoch"][str(e)] for e in range(4)] == [1, 1, 2, 2]
    # SWA beat early stopping on purpose: all epochs ran, and the run says so
    assert res["epochs_run"] == 4 and res["stopped_epoch"] is None
    assert any(note.startswith("swa+early_stop") for note in res["resolutions"])
    assert any(note.startswith("swa+lr_find") for note in res["resolutions"])
    # SWA's LR is a fraction of the LR the finder picked, not of the configured one
    assert did["swa_lr"] == pytest.approx(0.2 * res["lr_found"])
    assert f"at 0.2 x the peak LR ({did['swa_lr']:.3g})" in res["resolutions"][0]


def test_swa_never_raises_a_small_peak_lr(tiny_data, tmp_path):
    """At a peak of 0.004 an absolute SWA LR of 0.01 raised the LR 2.5x for the last epochs: ``+swa``
    measured SWA plus a higher LR. SWA's LR is 0.2 x the peak by default."""
    out = tmp_path / "small"
    cfg = tiny_config(
        tiny_data, out, augment=PLAIN_AUGMENT, tricks={"swa": True}, optim={"lr": 4e-3, "schedule": "constant"}
    )
    res = run(cfg)
    assert res["status"] == "completed", res["error"]
    lrs = logged(out, "lr-SGD")
    assert max(lrs) == pytest.approx(4e-3) and lrs[-1] == pytest.approx(8e-4)
    assert res["lightning"]["swa_lr"] == pytest.approx(8e-4)
    assert res["resolutions"][0].startswith("swa: SWA from epoch 2 of 3 at 0.2 x the peak LR (0.0008)")


def test_ddp_two_cpu_processes_write_one_result(tiny_data, tmp_path):
    out = tmp_path / "ddp"
    proc = run_console_script(
        [
            "train",
            "--data-dir",
            tiny_data,
            "--out",
            out,
            "--accelerator",
            "cpu",
            "--devices",
            "2",
            "--epochs",
            "2",
            "--batch-size",
            "12",
            "--num-workers",
            "0",
            "--no-stage",
            "--wandb-mode",
            "disabled",
        ],
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = read_json(out / "result.json")
    assert res["status"] == "completed" and res["world_size"] == 2
    # 36 images over 2 ranks, 6 per rank per step: 3 optimizer steps per epoch on each rank
    assert res["lightning"]["global_step"] == 2 * math.ceil(36 / 2) // 6
    assert list(out.glob("result.json*")) == [out / "result.json"]  # one result, no stray temp files
    # stderr is a pipe: one progress line per epoch, from global rank 0 only
    progress = [line for line in proc.stderr.splitlines() if "cifar_hpc.training.progress: epoch" in line]
    assert [line.split()[3] for line in progress] == ["1/2", "2/2"], progress
    assert read_json(out / "progress.json")["epoch"] == 2


def test_non_finite_loss_fails_the_run_with_the_reason(tiny_data, tmp_path, capsys):
    out = tmp_path / "nan"
    # Adam moves every weight by about lr: at 1e37 the next forward pass overflows to inf, then NaN
    result = run_cli(
        [
            "train",
            "--data-dir",
            tiny_data,
            "--out",
            out,
            "--optimizer",
            "adam",
            "--lr",
            "1e37",
            "--schedule",
            "constant",
            "--batch-size",
            "12",
            "--num-workers",
            "0",
            "--no-stage",
            "--wandb-mode",
            "disabled",
        ],
        capsys,
    )
    assert result.code == 1
    res = read_json(out / "result.json")
    assert res["status"] == "failed" and "training loss is" in res["error"]
    assert "FAILED" in result.err and "Traceback" not in result.err


def test_completed_run_is_not_trained_again_and_resume_uses_last_checkpoint(tiny_data, tmp_path):
    out = tmp_path / "again"
    cfg = tiny_config(tiny_data, out, epochs=2)
    first = run(cfg)
    assert first["status"] == "completed"
    stamp = (out / "result.json").stat().st_mtime_ns
    assert run(cfg)["finished_at"] == first["finished_at"]
    assert (out / "result.json").stat().st_mtime_ns == stamp  # nothing redone, nothing rewritten
    # an attempt killed after training but before its result: the next attempt resumes from
    # last.ckpt (written every epoch, not only on improvement), trains nothing again, and re-tests
    (out / "result.json").unlink()
    resumed = run(cfg)
    assert resumed["status"] == "completed" and resumed["epochs_run"] == 2
    assert resumed["lightning"]["global_step"] == first["lightning"]["global_step"]
    assert resumed["attempts"][-1]["train_images"] == 0  # no training batch ran in the last attempt
    assert resumed["train_images_per_s"] == first["train_images_per_s"]  # the cost is the first attempt's
    assert [a["reason"] for a in resumed["attempts"]] == ["completed", "completed"]
    assert resumed["test_acc"] == pytest.approx(first["test_acc"])
    # one CSV log at a stable path, continued (not replaced) by the second attempt: both epochs' training
    # rows of the first attempt, then each attempt's test
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["hparams.yaml", "metrics.csv"]
    assert len(logged(out, "train_loss")) == 2
    assert logged(out, "test_acc") == pytest.approx([first["test_acc"], resumed["test_acc"]])
