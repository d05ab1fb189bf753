"""GPU time well spent, checked on the CPU: what would stall a GPU is counted here.

A read of a device value inside a training step stops a GPU's host from running ahead (``bench/host_reads.py``
counts them on any device); on a CPU the same code does the same reads. Data is GENERATED.
"""

from __future__ import annotations

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


class _CtrlCAt(Callback):
    """Presses Ctrl-C (as Lightning sees it) at one training batch: a run stopped from outside."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise KeyboardInterrupt


def _final_weights(out) -> dict:
    import torch

    return torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.parametrize("loader", ["torchvision", "device"])
def test_a_resumed_run_trains_exactly_what_the_uninterrupted_run_trains(tiny_data, tmp_path, loader):
    """Interrupted in epoch 2 and resumed from its last checkpoint, a run ends with the uninterrupted
    run's weights, bit for bit (CPU), augmentation on. Before: the resumed epoch replayed epoch 1's
    order (the torchvision loader's generator started again from the seed): 96% straight, 88% resumed."""
    import torch

    from cifar_hpc.base.errors import Interrupted

    augment = {"crop": True, "flip": True, "rotate": True}
    straight = run(tiny_config(tiny_data, tmp_path / "straight", epochs=3, augment=augment, data={"loader": loader}))
    cfg = tiny_config(tiny_data, tmp_path / "resumed", epochs=3, augment=augment, data={"loader": loader})
    with pytest.raises(Interrupted):
        run(cfg, extra_callbacks=[_CtrlCAt(epoch=1, batch=1)])
    resumed = run(cfg)
    assert straight["status"] == resumed["status"] == "completed" and len(resumed["attempts"]) == 2
    a, b = _final_weights(tmp_path / "straight"), _final_weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), [
        k for k in a if not torch.equal(a[k], b[k])
    ]
    assert resumed["test_acc"] == straight["test_acc"]
