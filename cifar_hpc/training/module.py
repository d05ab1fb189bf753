"""The LightningModule: NLL loss on log-softmax, SGD/Adam and a per-step schedule.

A training step reads nothing back from the device (``epoch_sums``): its loss, accuracy and NaN check
are summed on the device and read once per epoch, when they are logged (``train_loss``, ``train_acc``).
Validation and test accuracy come from torchmetrics, computed once per epoch.

The loss (:func:`nll_loss`) and the optimizer + schedule (:func:`build_optimizer`) are plain functions so
that the benchmarks time exactly the step the module trains with, without Lightning around it."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from cifar_hpc.config.train_config import OptimConfig, TrainConfig
from cifar_hpc.training.epoch_sums import EpochStats, EpochSums
from cifar_hpc.training.models import build_model
from cifar_hpc.training.schedule import lr_factor, optimizer_steps

EPOCH_SUMS_KEY = "cifar_hpc_epoch_sums"
"""Where a checkpoint keeps the training epoch's sums so far (``EpochSums.state_dict``)."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite: the run cannot recover and is marked failed."""


def nll_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean NLL of ``labels`` under log-softmax(``logits``), and the log-probabilities (N, 10).

    The log-softmax runs in float32 even under bf16 autocast: the NLL of a confident wrong answer needs the range."""
    log_probs = F.log_softmax(logits.float(), dim=1)
    return F.nll_loss(log_probs, labels), log_probs


def build_optimizer(optim: OptimConfig, params, lr: float, total_steps: int):
    """The optimizer of ``optim`` at peak LR ``lr`` and its per-optimizer-step schedule over ``total_steps``.

    SGD gets Nesterov momentum whenever it has momentum; Adam takes ``momentum`` as its beta1. Returns
    ``(optimizer, LambdaLR)``: step the scheduler once per optimizer step."""
    if optim.name == "sgd":
        optimizer = torch.optim.SGD(
            params, lr=lr, momentum=optim.momentum, nesterov=optim.momentum > 0, weight_decay=optim.weight_decay
        )
    else:
        optimizer = torch.optim.Adam(params, lr=lr, betas=(optim.momentum, 0.999), weight_decay=optim.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, optim.schedule))
    return optimizer, schedule


class CifarResNet(pl.LightningModule):
    def __init__(
        self,
        cfg: TrainConfig,
        *,
        batches_per_epoch: int,
        channels_last: bool = False,
        schedule_epochs: int | None = None,
    ) -> None:
        """``batches_per_epoch``: training batches each rank sees per epoch (the data's business, so it
        is given, not looked up; ``trainer.estimated_stepping_batches`` would not do: it knows neither
        a scheduled accumulation nor that SWA's schedule takes over the last epochs).
        ``channels_last``: the resolved memory format (the config's None means "decide per device").
        ``schedule_epochs``: epochs the LR schedule spans (fewer than ``cfg.epochs`` when SWA's own
        schedule takes over the last ones)."""
        super().__init__()
        self.cfg = cfg
        self.batches_per_epoch = batches_per_epoch
        self.save_hyperparameters({"run_id": cfg.run_id, **cfg.to_dict()})
        self.lr = cfg.optim.lr  # the LR finder overwrites this attribute with its pick
        self.schedule_epochs = schedule_epochs or cfg.epochs
        self.channels_last = channels_last
        self.model = build_model(cfg.model)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.epoch_sums: EpochSums | None = None
        self._epoch_stats: EpochStats | None = None
        self._resumed_sums: dict | None = None
        self.cudagraph_steps = False
        """The network runs as CUDA graphs (``compile_mode = "reduce-overhead"``): each training step is marked."""
        self.val_acc = MulticlassAccuracy(num_classes=10, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=10, average="micro")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images)

    def _loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, labels = batch
        loss, log_probs = nll_loss(self(images), labels)
        return loss, log_probs, labels

    def on_train_epoch_start(self) -> None:
        self.epoch_sums, self._epoch_stats = EpochSums(self.device, self.batches_per_epoch), None

    def on_train_start(self) -> None:
        # resumed in an epoch's middle, there is no epoch start to come: go on with the checkpoint's
        # sums, on the device (checkpoints are restored before the module is moved there)
        resumed, self._resumed_sums = self._resumed_sums, None
        if resumed is not None:
            self.epoch_sums = EpochSums.from_state(self.device, resumed, self.batches_per_epoch)
        elif self.epoch_sums is None:
            self.epoch_sums = EpochSums(self.device, self.batches_per_epoch)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.epoch_sums is not None and self.trainer.training:  # a checkpoint in an epoch's middle
            checkpoint[EPOCH_SUMS_KEY] = self.epoch_sums.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._resumed_sums = checkpoint.get(EPOCH_SUMS_KEY)  # the epoch so far: its figures stay whole

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        if self.cudagraph_steps:  # the previous step's graph outputs may be overwritten from here on
            torch.compiler.cudagraph_mark_step_begin()
        loss, log_probs, labels = self._loss(batch)
        self.epoch_sums.add(loss, log_probs, labels, self.global_step)
        _, nonfinite_step = self.epoch_sums.peek()  # CUDA only: a few steps late, never waits
        if nonfinite_step is not None and self.trainer.world_size == 1:  # under DDP: all ranks at the epoch's end
            self.train_epoch_stats(force=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.trainer.is_last_batch:  # before validation and its checkpoints see NaN weights
            self.train_epoch_stats()

    def train_epoch_stats(self, *, force: bool = False) -> EpochStats:
        """This epoch's training loss and accuracy over every rank: read once (every rank must call
        it together), at the last batch; raises ``NonFiniteLossError`` if a step's loss was NaN/inf."""
        if self._epoch_stats is None or force:
            strategy = self.trainer.strategy
            stats = self.epoch_sums.read(lambda tensor, op: strategy.reduce(tensor, reduce_op=op))
            self._epoch_stats = stats
            if stats.nonfinite_step is not None:
                value = "not finite (on another rank)" if stats.nonfinite_loss is None else stats.nonfinite_loss
                raise NonFiniteLossError(
                    f"training loss is {value} at epoch {self.current_epoch}, step {stats.nonfinite_step}"
                )
        return self._epoch_stats

    def on_train_epoch_end(self) -> None:
        stats = self.train_epoch_stats()
        if stats.images:  # the same values on every rank: logged without another reduction
            self.log("train_loss", stats.loss, on_epoch=True, prog_bar=True)  # a float: no read here
            self.log("train_acc", stats.acc, on_epoch=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        loss, log_probs, labels = self._loss(batch)
        self.val_acc(log_probs, labels)
        self.log("val_loss", loss, sync_dist=True)
        self.log("val_acc", self.val_acc, prog_bar=True)

    def test_step(self, batch, batch_idx: int) -> None:
        loss, log_probs, labels = self._loss(batch)
        self.test_acc(log_probs, labels)
        self.log("test_loss", loss, sync_dist=True)
        self.log("test_acc", self.test_acc)

    def configure_optimizers(self):
        total = optimizer_steps(self.batches_per_epoch, self.schedule_epochs, self.cfg.tricks.accumulation)
        optimizer, schedule = build_optimizer(self.cfg.optim, self.parameters(), self.lr, total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
