"""GPU time well spent, checked on the CPU: what would stall a GPU is counted here.

A read of a device value inside a training step stops a GPU's host from running ahead (``bench/host_reads.py``
counts them on any device); on a CPU the same code does the same reads. Data is GENERATED.
"""

from __future__ import annotations

import os
import signal

import pytest
from lightning.pytorch.callbacks import Callback
from test_train import tiny_config

from bench.host_reads import ReadCounter, ReadsPerStep
from cifar_hpc.training.train import run

pytestmark = pytest.mark.slow


def test_the_read_counter_sees_reads_and_only_reads():
    import torch

    x = torch.ones(3)
    with ReadCounter() as counter:
        y = (x * 2).sum()  # device work: not a read
        y.item()
        bool(y > 0)
        f"{y:.2f}"
        x.tolist()
    assert counter.reads == 4 and all(place.startswith("tests/test_gpu_time.py:") for place in counter.places)


@pytest.mark.parametrize("loader", ["device", "torchvision"])
def test_a_training_step_reads_nothing_back_from_the_device(tiny_data, tmp_path, loader):
    """No read in any step but an epoch's last (the epoch's loss and accuracy, read once), Lightning's
    end-of-batch work included. Before: 57 reads in a 44-step run (the per-step loss for the progress bar,
    the NaN check every 16 steps)."""
    reads = ReadsPerStep()
    cfg = tiny_config(tiny_data, tmp_path / "run", epochs=3, data={"loader": loader})
    result = run(cfg, extra_callbacks=[reads])
    assert result["status"] == "completed"
    assert len(reads.step_reads) == 3 * 2 and len(reads.epoch_end_reads) >= 3  # 3 batches per epoch
    assert all(not step for step in reads.step_reads), reads.summary()["read_places"]
    assert max(sum(c.values()) for c in reads.epoch_end_reads) <= 2, reads.epoch_end_reads
    assert result["epochs_run"] == 3  # (learning itself: test_train.py, on learnable data)


def test_a_nonfinite_loss_still_fails_the_run_with_its_step(tiny_data, tmp_path):
    """The NaN check reads once per epoch now, and still names the step the loss broke at."""
    cfg = tiny_config(tiny_data, tmp_path / "nan", epochs=2, optim={"name": "adam", "lr": 1e37})
    result = run(cfg)
    assert result["status"] == "failed"
    assert "training loss is" in result["error"] and "at epoch 0, step " in result["error"]
    assert result["epochs_run"] == 0


class _StopAt(Callback):
    """Stops the run from outside at one training batch: ``KeyboardInterrupt`` raised there (as if
    Lightning had seen Ctrl-C mid-step), or a real SIGINT sent to this process (the terminal's Ctrl-C)."""

    def __init__(self, epoch: int, batch: int, *, sigint: bool = False) -> None:
        self.epoch, self.batch, self.sigint = epoch, batch, sigint

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            if self.sigint:
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise KeyboardInterrupt


def _final_weights(out) -> dict:
    import torch

    return torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


AUGMENT = {"crop": True, "flip": True, "rotate": True}


def _interrupted_then_resumed(tiny_data, tmp_path, loader: str, stop: _StopAt, **settings) -> tuple[dict, dict]:
    """The uninterrupted run's result and that of the same run stopped by ``stop`` and run again."""
    from cifar_hpc.base.errors import Interrupted

    data = {"loader": loader}
    straight = run(tiny_config(tiny_data, tmp_path / "straight", epochs=3, augment=AUGMENT, data=data, **settings))
    cfg = tiny_config(tiny_data, tmp_path / "resumed", epochs=3, augment=AUGMENT, data=data, **settings)
    with pytest.raises(Interrupted):
        run(cfg, extra_callbacks=[stop])
    resumed = run(cfg)
    assert straight["status"] == resumed["status"] == "completed" and len(resumed["attempts"]) == 2
    return straight, resumed


def _assert_same_weights(tmp_path) -> None:
    import torch

    a, b = _final_weights(tmp_path / "straight"), _final_weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), [
        k for k in a if not torch.equal(a[k], b[k])
    ]


@pytest.mark.parametrize("loader", ["torchvision", "device"])
def test_a_run_resumed_from_an_epochs_end_trains_exactly_what_the_uninterrupted_run_trains(tiny_data, tmp_path, loader):
    """Stopped in epoch 2 and resumed from the end of epoch 1 (``checkpoint_every_s = 0``: every epoch),
    a run ends with the uninterrupted run's weights, bit for bit (CPU), augmentation on. Before: the
    resumed epoch replayed epoch 1's order (the torchvision loader's generator started again from the
    seed): 96% straight, 88% resumed."""
    straight, resumed = _interrupted_then_resumed(
        tiny_data, tmp_path, loader, _StopAt(epoch=1, batch=1), checkpoint_every_s=0
    )
    assert resumed["attempts"][1]["train_images"] == 2 * 3 * 12  # epochs 2 and 3, 3 batches of 12 each
    _assert_same_weights(tmp_path)
    assert resumed["test_acc"] == straight["test_acc"]


@pytest.mark.parametrize("loader", ["torchvision", "device"])
def test_ctrl_c_saves_at_the_step_boundary_and_the_run_resumes_mid_epoch_exactly(tiny_data, tmp_path, loader):
    """A real SIGINT in epoch 2's second batch: that batch finishes, ``last.ckpt`` is written there (not in
    the signal handler) and the run stops; run again, it resumes in the middle of epoch 2 and ends with
    the uninterrupted run's weights, bit for bit."""
    straight, resumed = _interrupted_then_resumed(tiny_data, tmp_path, loader, _StopAt(epoch=1, batch=1, sigint=True))
    assert resumed["attempts"][1]["train_images"] == (3 * 3 - 5) * 12  # 5 of 9 batches were done
    _assert_same_weights(tmp_path)
    assert resumed["test_acc"] == straight["test_acc"] and resumed["best_val_acc"] == straight["best_val_acc"]


def test_checkpoints_are_written_by_time_not_per_epoch(tiny_data, tmp_path, monkeypatch):
    """A 6-epoch run of a few seconds writes 2 checkpoints (the best and last.ckpt, at the end), not 2 per
    epoch; with ``checkpoint_every_s = 0`` last.ckpt is written every epoch again."""
    from cifar_hpc.training import checkpoints

    written: list[str] = []
    real_write = checkpoints.write_atomic

    def counting_write(target, payload):  # counts, then writes for real
        written.append(target.name)
        real_write(target, payload)

    monkeypatch.setattr(checkpoints, "write_atomic", counting_write)
    result = run(tiny_config(tiny_data, tmp_path / "timed", epochs=6))
    assert result["status"] == "completed" and len(written) <= 3, written
    assert sorted(p.name for p in (tmp_path / "timed" / "checkpoints").iterdir()) == sorted(set(written))
    written.clear()
    run(tiny_config(tiny_data, tmp_path / "every", epochs=6, checkpoint_every_s=0))
    assert written.count("last.ckpt") == 6


def _compiled_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def test_compile_compiles_the_network_once_per_mode_and_once_per_study(tiny_data, tmp_path):
    """``compile``: the network's training graph, its evaluation graph and at most one for a smaller
    evaluation batch; no recompile after the first epoch, dynamo's limit never hit. Before: the whole
    LightningModule was compiled and recompiled every step (guards on global_step, self.log's names)
    until its limit of 8, 16 "Recompiling function" lines in 2 epochs.

    Then a second run of the study (another seed) in its own process with its own TMPDIR (as on
    another node) finds the first's kernels in the study's ``.compile-cache`` and compiles in well under
    half the time. Before, Inductor's cache was in node-local /tmp: every node compiled cold."""
    import json
    import os

    import torch._dynamo
    from conftest import run_console_script
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    graphs: list[int] = []

    class GraphsPerEpoch(Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            graphs.append(_compiled_graphs())

    study = tmp_path / "runs" / "study"
    cfg = tiny_config(tiny_data, study / "seed0", epochs=3, compile=True, data={"loader": "device"})
    first = run(cfg, extra_callbacks=[GraphsPerEpoch()])
    assert first["status"] == "completed", first.get("error")
    assert graphs[0] <= 4 and graphs[-1] == graphs[0], graphs  # train, eval, eval's smaller batch; then none
    assert _compiled_graphs() - 1 <= 3  # recompiles: the eval graph, a smaller last batch, test's batch
    assert not counters["unimplemented"] and "cache_size_limit" not in str(dict(counters)), dict(counters)
    assert any((study / ".compile-cache").rglob("fxgraph"))  # the kernels are on the study's filesystem

    node_tmp = tmp_path / "node1"
    node_tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
    args = ["train", "--data-dir", tiny_data, "--out", study / "seed1", "--epochs", "1", "--seed", "1"]
    args += ["--batch-size", "12", "--num-workers", "0", "--no-stage", "--wandb-mode", "disabled", "--compile"]
    args += ["--loader", "device"]
    done = run_console_script(args, env={**env, "TMPDIR": str(node_tmp)}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    cold = first["timing"]["compile_s"]
    warm = json.loads((study / "seed1" / "result.json").read_text())["timing"]["compile_s"]
    print(f"compile_s cold {cold:.1f}, warm {warm:.1f} (another process and TMPDIR)")
    assert warm < 0.5 * cold, (cold, warm)
