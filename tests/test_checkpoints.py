"""Checkpoints survive a full disk and a kill mid-save; a run resumes only from a complete checkpoint of its own.

The full-disk tests fill a real (small) filesystem: a tmpfs mounted in a user + mount namespace
(``unshare -rm``), so nothing outside the test's folder is touched. Where the kernel or a container
forbids that namespace they skip and say why. Run as a script, this file is the child those tests
start inside the namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest
import torch

from cifar_hpc.training.checkpoints import (
    RUN_KEY,
    AtomicCheckpointIO,
    CheckpointWriteError,
    check_checkpoint,
    resume_checkpoint,
)

MB = 1_000_000


def fake_checkpoint(step: int, megabytes: float = 0.1, run_id: str = "run-a") -> dict:
    """What matters here of a Lightning checkpoint: its step, tensors of a given size, the module's hparams."""
    return {
        "epoch": step // 3,
        "global_step": step,
        "state_dict": {"w": torch.arange(int(megabytes * MB / 4), dtype=torch.float32)},
        "hyper_parameters": {"run_id": run_id},
    }


def save(folder: Path, name: str, step: int, run_id: str = "run-a", megabytes: float = 0.1) -> Path:
    path = folder / "checkpoints" / name
    AtomicCheckpointIO(run_id=run_id).save_checkpoint(fake_checkpoint(step, megabytes, run_id), path)
    return path


def truncate(path: Path, fraction: float = 2 / 3) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(int(size * fraction))


class Said(list):
    def __call__(self, line: str) -> None:
        self.append(line)


# --- the plugin ---------------------------------------------------------------------------------


def test_save_replaces_the_target_whole_and_stamps_the_run_id(tmp_path):
    path = save(tmp_path, "last.ckpt", step=3)
    save(tmp_path, "last.ckpt", step=6)
    loaded = torch.load(path, weights_only=False)
    assert loaded["global_step"] == 6 and loaded[RUN_KEY] == {"run_id": "run-a"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temp file left


def test_remote_paths_keep_lightnings_behaviour():
    import fsspec

    AtomicCheckpointIO(run_id="run-a").save_checkpoint(fake_checkpoint(3), "memory://ckpt/last.ckpt")
    with fsspec.open("memory://ckpt/last.ckpt", "rb") as handle:
        assert torch.load(handle, weights_only=False)[RUN_KEY]["run_id"] == "run-a"


# --- which checkpoint a run resumes from --------------------------------------------------------


def test_a_valid_last_checkpoint_is_resumed_without_a_word(tmp_path):
    last = save(tmp_path, "last.ckpt", step=6)
    save(tmp_path, "best-001-0.5000.ckpt", step=6)
    said = Said()
    assert resume_checkpoint(tmp_path, "run-a", said) == last and said == []


def test_nothing_to_resume_is_a_fresh_start_without_a_word(tmp_path):
    said = Said()
    assert resume_checkpoint(tmp_path, "run-a", said) is None and said == []
    (tmp_path / "checkpoints").mkdir()
    assert resume_checkpoint(tmp_path, "run-a", said) is None and said == []


def test_truncated_last_falls_back_to_the_best_checkpoint_in_one_line(tmp_path):
    last = save(tmp_path, "last.ckpt", step=9)
    best = save(tmp_path, "best-002-0.4512.ckpt", step=9)
    truncate(last)
    said = Said()
    assert resume_checkpoint(tmp_path, "run-a", said) == best
    assert said == [
        f"{last} is truncated or corrupt (not a complete zip, {last.stat().st_size / MB:.1f} MB: "
        f"File is not a zip file); resuming from {best}"
    ]


def test_truncated_last_and_no_best_starts_fresh_in_one_line(tmp_path):
    last = save(tmp_path, "last.ckpt", step=3)
    truncate(last)
    said = Said()
    assert resume_checkpoint(tmp_path, "run-a", said) is None
    assert len(said) == 1 and said[0].startswith(f"{last} is truncated") and said[0].endswith("; starting fresh")


def test_a_checkpoint_of_another_run_is_not_resumed(tmp_path):
    last = save(tmp_path, "last.ckpt", step=3, run_id="run-b")
    said = Said()
    assert resume_checkpoint(tmp_path, "run-a", said) is None
    assert said == [f"{last} belongs to run run-b, not run-a; starting fresh"]
    # a checkpoint written before the plugin stamped it: the module's hyperparameters name the run
    torch.save(fake_checkpoint(3, run_id="run-b"), last)
    assert check_checkpoint(last, "run-a").problem == "belongs to run run-b, not run-a"


def test_flipped_bytes_inside_a_complete_zip_are_caught_by_the_crc(tmp_path):
    last = save(tmp_path, "last.ckpt", step=6, megabytes=1)
    best = save(tmp_path, "best-001-0.5000.ckpt", step=3)
    with open(last, "r+b") as handle:  # the middle of the tensor data: the zip's directory is intact
        handle.seek(last.stat().st_size // 2)
        handle.write(b"\xff" * 16)
    said = Said()
    assert resume_checkpoint(tmp_path, "run-a", said) == best
    assert said == [f"{last} is corrupt (CRC mismatch in archive/data/0); resuming from {best}"]


def test_a_best_checkpoint_newer_than_last_wins(tmp_path):
    """The best checkpoint of an epoch is saved before last.ckpt: a failure between the two leaves it newer."""
    last = save(tmp_path, "last.ckpt", step=3)
    best = save(tmp_path, "best-001-0.5000.ckpt", step=6)
    said = Said()
    assert resume_checkpoint(tmp_path, "run-a", said) == best
    assert said == [f"{best} is newer than {last}; resuming from {best}"]
    last.unlink()
    said.clear()
    assert resume_checkpoint(tmp_path, "run-a", said) == best
    assert said == [f"{last} is missing; resuming from {best}"]


def test_temp_files_of_a_killed_save_are_removed_and_ignored(tmp_path):
    last = save(tmp_path, "last.ckpt", step=3)
    leftover = last.with_name(".last.ckpt.tmp-999999")
    leftover.write_bytes(b"PK\x03\x04 half a checkpoint")
    said = Said()
    assert resume_checkpoint(tmp_path, "run-a", said) == last and said == []
    assert not leftover.exists()


# --- with the real Trainer, wired as train.run is meant to be ----------------------------------


def tiny_trainer(data_dir: Path, out: Path, *, max_epochs: int = 2, callbacks: tuple = ()):
    """A tiny real run of 2 epochs (``max_epochs`` stops it earlier without changing its run id): train.run's
    Trainer reduced to what checkpoints need, with the plugin wired in. 36 training images after the
    validation split, 3 batches of 12 per epoch."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    from cifar_hpc.config.train_config import TrainConfig
    from cifar_hpc.data import cifar_files
    from cifar_hpc.training.callbacks import build_callbacks
    from cifar_hpc.training.loaders import CifarDataModule
    from cifar_hpc.training.module import CifarResNet

    cfg = TrainConfig.from_dict(
        {
            "epochs": 2,
            "batch_size": 12,
            "data": {"dir": str(data_dir), "num_workers": 0, "stage": False},
            "augment": {"crop": False, "flip": False, "rotate": False},
            "wandb": {"mode": "disabled"},
            "out_dir": str(out),
        }
    )
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = CifarDataModule(cifar_files.load_cifar10(data_dir), cfg)
    datamodule.check_world_size(1)
    module = CifarResNet(cfg, batches_per_epoch=datamodule.batches_per_epoch)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        callbacks=[*build_callbacks(cfg, out), *callbacks],
        logger=CSVLogger(save_dir=str(out), name="logs"),
        default_root_dir=str(out),
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        plugins=[AtomicCheckpointIO(run_id=cfg.run_id)],
    )
    return cfg, trainer, module, datamodule


@pytest.mark.slow
def test_truncated_last_checkpoint_resumes_from_best_with_lightning(tiny_data, tmp_path):
    out = tmp_path / "run"
    cfg, trainer, module, datamodule = tiny_trainer(tiny_data, out, max_epochs=1)
    trainer.fit(module, datamodule=datamodule)
    last = out / "checkpoints" / "last.ckpt"
    (best,) = (out / "checkpoints").glob("best-*.ckpt")
    truncate(last)  # as a copy across filesystems left it on a full disk: 67 of 89 MB

    cfg, trainer, module, datamodule = tiny_trainer(tiny_data, out)
    with pytest.raises(RuntimeError, match="failed finding central directory"):  # what every retry met
        trainer.fit(module, datamodule=datamodule, ckpt_path=last)

    said = Said()
    resume = resume_checkpoint(out, cfg.run_id, said)
    assert resume == best and len(said) == 1
    assert said[0].startswith(f"{last} is truncated or corrupt") and said[0].endswith(f"; resuming from {best}")
    cfg, trainer, module, datamodule = tiny_trainer(tiny_data, out)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    assert trainer.global_step == 2 * 3  # epoch 0 came from the checkpoint, epoch 1 was trained
    verdict = check_checkpoint(last, cfg.run_id)
    assert verdict.problem is None and verdict.global_step == 6


# --- a real full disk ---------------------------------------------------------------------------


@lru_cache(maxsize=1)
def small_disk_unavailable() -> str | None:
    """Why a tmpfs cannot be mounted in a user namespace here, or None when it can."""
    if shutil.which("unshare") is None:
        return "no `unshare` command (util-linux)"
    probe = Path(os.environ.get("TMPDIR", "/tmp"))
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o size=1m tmpfs "$0"', str(probe)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return f"cannot mount a tmpfs in a user namespace (`unshare -rm`): {proc.stderr.strip()}"
    return None


def on_small_disk(mount: Path, size: str, *args: object) -> dict:
    """Run this file as a script with a tmpfs of ``size`` mounted at ``mount``; its JSON report."""
    reason = small_disk_unavailable()
    if reason:
        pytest.skip(reason)
    mount.mkdir(parents=True, exist_ok=True)
    script = 'mount -t tmpfs -o size="$1" tmpfs "$2" && shift 2 && exec "$@"'
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", size, str(mount), sys.executable, __file__, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_full_disk_keeps_the_previous_checkpoint_and_says_so(tmp_path):
    report = on_small_disk(tmp_path / "disk", "4m", "save", tmp_path / "disk")
    target = str(tmp_path / "disk" / "checkpoints" / "last.ckpt")
    assert report["error_type"] == "CheckpointWriteError" and report["disk_full"] is True
    assert report["error"].startswith(f"disk full while writing checkpoint {target} (")
    assert "MB written); the previous checkpoint there is kept" in report["error"]
    assert report["files"] == ["last.ckpt"]  # the temp file is gone: its space is free again
    assert report["previous_step"] == 3 and report["previous_problem"] is None
    assert report["result_written"] is True  # result.json fits in the room the temp file gave back


@pytest.mark.slow
def test_full_disk_while_training_ends_the_run_with_its_checkpoints_intact(tiny_data, tmp_path):
    """``train.run`` on a disk that fills up before epoch 1's saves: the run ends failed with a
    result.json that says the disk is full, epoch 0's checkpoints intact; once there is room again
    the same run resumes from epoch 0's last.ckpt and completes, its cost summed over both attempts."""
    disk = tmp_path / "disk"
    report = on_small_disk(disk, "400m", "train", tiny_data, disk)
    folder = disk / "run" / "checkpoints"
    assert report["error_type"] == "CheckpointWriteError" and report["disk_full"] is True
    # the save that met the full disk: epoch 1's best checkpoint or its last.ckpt, whichever came first
    assert report["error"].startswith(f"disk full while writing checkpoint {folder}/"), report["error"]
    assert " MB written)" in report["error"]
    assert report["written_mb"] < report["checkpoint_mb"]
    # epoch 0's two checkpoints, complete, and nothing else: no temp file, no partial checkpoint
    assert [name for name in report["files"] if not name.startswith("best-000-")] == ["last.ckpt"]
    assert len(report["files"]) == 2
    assert report["last_problem"] is None and report["last_step"] == 3
    assert report["result_status"] == "failed" and report["result_error"] == f"CheckpointWriteError: {report['error']}"
    # room again (the job requeued once space was freed): resumes from epoch 0's last.ckpt silently
    assert report["resumable"] == str(folder / "last.ckpt") and report["said"] == []
    assert report["resumed_status"] == "completed" and report["resumed_step"] == 2 * 3
    assert [a["reason"].split(":")[0] for a in report["attempts"]] == ["failed", "completed"]


def _child_train(data_dir: Path, disk: Path) -> dict:
    """Epoch 0 with room; before epoch 1's saves, a ballast file leaves 10 MB free. Then, after the
    ballast is removed, the same run again."""
    import re

    from lightning.pytorch.callbacks import Callback

    from cifar_hpc.config.train_config import TrainConfig
    from cifar_hpc.data.fingerprint import with_fingerprint
    from cifar_hpc.training.results import read_result
    from cifar_hpc.training.train import run

    class FillDisk(Callback):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            if trainer.current_epoch == 1:
                stats = os.statvfs(disk)
                with open(disk / "ballast", "wb") as handle:
                    os.posix_fallocate(handle.fileno(), 0, stats.f_bavail * stats.f_frsize - 10 * MB)

    out = disk / "run"
    cfg = with_fingerprint(
        TrainConfig.from_dict(
            {
                "epochs": 2,
                "batch_size": 12,
                "accelerator": "cpu",
                "checkpoint_every_s": 0,  # both checkpoints every epoch: the test is about how they are written
                "data": {"dir": str(data_dir), "num_workers": 0, "stage": False},
                "augment": {"crop": False, "flip": False, "rotate": False},
                "wandb": {"mode": "disabled"},
                "out_dir": str(out),
            }
        )
    )
    report: dict = {"error_type": None, "error": None}
    try:
        run(cfg, extra_callbacks=(FillDisk(),))
    except CheckpointWriteError as error:
        report.update(error_type=type(error).__name__, error=str(error), disk_full=error.disk_full)
        written, total = re.search(r"\((\S+) of (\S+) MB written\)", str(error)).groups()
        report.update(written_mb=float(written), checkpoint_mb=float(total))
    last = out / "checkpoints" / "last.ckpt"
    verdict = check_checkpoint(last, cfg.run_id)
    failed = read_result(out) or {}
    report.update(
        files=sorted(p.name for p in last.parent.iterdir()),
        last_problem=verdict.problem,
        last_step=verdict.global_step,
        result_status=failed.get("status"),
        result_error=failed.get("error"),
    )

    (disk / "ballast").unlink()
    said = Said()
    report.update(resumable=str(resume_checkpoint(out, cfg.run_id, said)), said=said)
    resumed = run(cfg)
    report.update(
        resumed_status=resumed["status"],
        resumed_step=resumed["lightning"]["global_step"],
        attempts=resumed["attempts"],
    )
    return report


def _child_save(disk: Path) -> dict:
    """1 MB checkpoint, then a 4 MB one on a 4 MiB filesystem, then result.json."""
    from cifar_hpc.training.results import write_result

    path = save(disk, "last.ckpt", step=3, megabytes=1)
    report: dict = {"error_type": None, "error": None}
    try:
        save(disk, "last.ckpt", step=6, megabytes=4)
    except CheckpointWriteError as error:
        report.update(error_type=type(error).__name__, error=str(error), disk_full=error.disk_full)
    verdict = check_checkpoint(path, "run-a")
    report.update(
        files=sorted(p.name for p in path.parent.iterdir()),
        previous_step=verdict.global_step,
        previous_problem=verdict.problem,
    )
    write_result(disk, {"run_id": "run-a", "status": "failed", "error": report.get("error")})
    report["result_written"] = json.loads((disk / "result.json").read_text())["error"] == report.get("error")
    return report


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    child = {"save": _child_save, "train": _child_train}[command]
    print(json.dumps(child(*map(Path, rest))))
