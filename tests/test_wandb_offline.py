"""The offline W&B reader (tests/wandb_offline.py) against real files written by wandb itself."""

from __future__ import annotations

import time

import pytest
from wandb_offline import read_records, read_run


@pytest.fixture(autouse=True)
def offline_wandb(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))  # anything wandb writes lands in tmp_path
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / ".config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / ".cache"))
    monkeypatch.chdir(tmp_path)


def test_plain_offline_run(tmp_path):
    import wandb

    config = {"lr": 0.1, "model": {"name": "resnet18", "stem": {"kernel": 3}}, "tricks": ["swa"]}
    run = wandb.init(
        mode="offline",
        dir=tmp_path,
        id="abc123",
        project="p",
        group="g",
        job_type="train",
        tags=["t1", "t2"],
        config=config,
    )
    for i in range(4):
        run.log({"loss": 1.0 / (i + 1), "val": {"acc": 0.2 * i}, "note": "x" * 20_000})  # 4 x 20 kB
    run.summary["best_acc"] = 0.9
    run.config.update({"late": True})
    run.finish()

    got = read_run(tmp_path)  # finds it below, once despite the wandb/latest-run symlink; waits for "exit"
    (path,) = tmp_path.glob("wandb/offline-run-*-abc123/run-abc123.wandb")
    records = read_records(path)
    assert records[0].WhichOneof("record_type") == "header"
    assert records[-1].WhichOneof("record_type") == "exit"
    assert sum(r.WhichOneof("record_type") == "history" for r in records) == 4  # 20 kB rows span blocks
    assert got.files == [path.resolve()]
    assert (got.run_id, got.project, got.group, got.job_type, got.tags) == ("abc123", "p", "g", "train", ["t1", "t2"])
    assert got.config == {**config, "late": True}  # nested dicts come back nested
    assert [row["loss"] for row in got.history] == [1.0, 0.5, pytest.approx(1 / 3), 0.25]
    assert [row["val.acc"] for row in got.history] == pytest.approx([0.0, 0.2, 0.4, 0.6])
    assert [row["_step"] for row in got.history] == [0, 1, 2, 3]
    assert got.summary["loss"] == 0.25 and got.summary["best_acc"] == 0.9
    assert read_run(path).run_id == read_run(path.parent, run_id="abc123").run_id == "abc123"


def test_lightning_wandb_logger_and_choosing_among_runs(tmp_path):
    from lightning.pytorch.loggers import WandbLogger

    save_dir = tmp_path / "runs" / "r1"
    for run_id, lr in [("lit1", 0.1), ("lit2", 0.2)]:
        logger = WandbLogger(offline=True, id=run_id, save_dir=save_dir, project="cifar", group="grid-a")
        logger.log_hyperparams({"lr": lr, "optim": {"name": "sgd", "momentum": 0.9}})
        for step in (0, 10, 20):
            logger.log_metrics({"train/loss": 1.0 / (step + 1), "epoch": 0}, step=step)
        logger.experiment.finish()

    assert list(save_dir.glob("wandb/offline-run-*-lit1/run-lit1.wandb"))  # save_dir/wandb/..., not save_dir/...
    with pytest.raises(ValueError, match="run_id"):
        read_run(save_dir)  # two runs: the caller must pick
    got = read_run(save_dir, run_id="lit2")
    assert (got.run_id, got.project, got.group) == ("lit2", "cifar", "grid-a")
    assert got.config == {"lr": 0.2, "optim": {"name": "sgd", "momentum": 0.9}}
    # WandbLogger's step goes to "trainer/global_step"; W&B's own _step only counts the calls
    assert [r["trainer/global_step"] for r in got.history] == [0, 10, 20]
    assert [r["_step"] for r in got.history] == [0, 1, 2]
    assert got.history[-1]["train/loss"] == pytest.approx(1 / 21)
    assert got.summary["trainer/global_step"] == 20


def test_resumed_run_is_merged_and_corruption_is_caught(tmp_path):
    import wandb

    def segment(k: int) -> None:  # a requeued job resumes the same id: a second offline-run-* dir
        run = wandb.init(
            mode="offline", dir=tmp_path, id="req1", project="p", resume="allow", config={"lr": 0.1} if k == 0 else None
        )
        run.log({"loss": float(k)})
        run.finish()

    started = time.time()
    segment(0)
    time.sleep(max(0.0, int(started) + 1.01 - time.time()))  # run dirs are named to the second
    segment(1)

    got = read_run(tmp_path)
    assert len(got.files) == 2 and got.config == {"lr": 0.1}
    assert [row["loss"] for row in got.history] == [0.0, 1.0]
    assert [row["_step"] for row in got.history] == [0, 0]  # offline, the resumed run restarts _step

    data = bytearray(got.files[0].read_bytes())
    data[200] ^= 0xFF
    broken = tmp_path / "broken" / "run-req1.wandb"
    broken.parent.mkdir()
    broken.write_bytes(data)
    with pytest.raises(ValueError, match="crc"):
        read_records(broken)
