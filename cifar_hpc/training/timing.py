"""Where a run's time goes: the ``timing`` block of each attempt (``attempts.json``) and of
``result.json`` (the sums over its attempts, like ``wall_s`` and ``train_s``). Seconds, or null
where a phase did not happen or was not reached.

**Start-up**: from the attempt's start (the process start for the first run a process trains, its
imports included; the moment the run began for a later run of a pack) to the first training step,
``to_first_step_s``, in contiguous parts that add up to it:

* ``imports_s``: process start → ``cifar_hpc.training.train`` imported (torch, Lightning, ...); 0 for a later
  run of a pack, which pays none;
* ``data_s``: the data verified, staged to scratch and loaded into memory (a pack keeps it loaded);
* ``process_group_s``: ``trainer.fit`` called → Lightning's ``setup`` hook: the accelerator and the
  DDP process group (``Strategy.setup_environment``; a pack reuses the group) and the data module's
  ``setup`` (the device loader copies the data to the device there);
* ``setup_s``: the rest before the first step: the run's folder and config, model, Trainer, the
  loggers (W&B's init), the checkpoint a requeued run resumes from, the model moved to its device
  and wrapped for DDP, the LR finder's sweep, Lightning's sanity validation, the first batch loaded;
* ``compile_s``: torch.compile's first-step overhead, the first training step's time less the
  median of the next few (GPU steps are asynchronous: the median estimates the steady step); null
  when ``compile`` is off.

**Then** ``train_s`` (the training epochs, validation excluded: the attempt's ``train_s``, which
also holds ``compile_s``), ``val_s`` (validation during fit; the sanity check is start-up),
``test_s`` (the test, best checkpoint loaded) and ``teardown_s`` (W&B's finish and the process
group's end, measured after ``result.json`` is first written, which is then written again with it).

``RunClock`` (the callback ``train.run`` uses) keeps the attempt's heartbeat as well.
Moments (``marks``) are ``time.time()``, comparable with the process start read from ``/proc``;
durations inside the process (epochs, steps, validation) are ``time.perf_counter()`` differences.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

if TYPE_CHECKING:
    from cifar_hpc.training.attempts import AttemptLog

STEPS_KEPT = 6
"""The first training steps timed: the first against the median of the others (``compile_s``)."""


class PhaseClock(Callback):
    """Times a run's phases from Lightning's hooks; ``run()`` marks what happens outside ``fit``
    (``mark("data_start")``, ``"data_end"``, ``"fit"``) and sets ``test_seconds``/``teardown_seconds``."""

    def __init__(self, started: float | None = None, *, imported: float | None = None, compile: bool = False) -> None:
        self.started = started
        """The attempt's start (``time.time()``); None: a benchmark timing the loop alone."""
        self.imported = imported
        self.compile = compile
        self.marks: dict[str, float] = {}
        self.steps: list[float] = []
        """Durations of the first ``STEPS_KEPT`` training steps."""
        self.train_seconds = 0.0
        self.val_seconds = 0.0
        self.test_seconds: float | None = None
        self.teardown_seconds: float | None = None
        self._epoch_start: float | None = None
        self._val_start: float | None = None
        self._step_start: float | None = None
        self._paused = False

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, time.time())

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.mark("setup")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.mark("first_step")
        if len(self.steps) < STEPS_KEPT:
            self._step_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._step_start is not None:
            self.steps.append(time.perf_counter() - self._step_start)
            self._step_start = None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        # Lightning validates inside the training epoch (before on_train_epoch_end): pause its clock
        self._val_start = time.perf_counter()
        self._paused = self._epoch_start is not None
        if self._epoch_start is not None:
            self.train_seconds += self._val_start - self._epoch_start
            self._epoch_start = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._val_start is None:
            return
        now = time.perf_counter()
        self.val_seconds += now - self._val_start
        self._val_start = None
        if self._paused:  # back to the epoch it interrupted (mid-epoch validation, or its end)
            self._epoch_start = now

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._epoch_start is not None:
            self.train_seconds += time.perf_counter() - self._epoch_start
        self._epoch_start = None

    def seconds(self) -> float:
        """Training seconds so far, counting an epoch that an error cut short."""
        return self.train_seconds + (time.perf_counter() - self._epoch_start if self._epoch_start else 0.0)

    def block(self) -> dict[str, float | None]:
        """This attempt's ``timing``, as far as it got."""
        marks, start = self.marks, self.started
        imports = data = process_group = setup = to_first = None
        compile_s = self._compile_overhead()
        if start is not None:
            imported = max(start, self.imported if self.imported is not None else start)
            imports = imported - start
            if "data_start" in marks and "data_end" in marks:
                data = marks["data_end"] - marks["data_start"]
            if "fit" in marks and "setup" in marks:
                process_group = marks["setup"] - marks["fit"]
            if {"data_start", "data_end", "fit", "setup", "first_step"} <= marks.keys():
                # the gaps between the measured parts: contiguous, so the parts add up
                setup = (marks["data_start"] - imported) + (marks["fit"] - marks["data_end"])
                setup += marks["first_step"] - marks["setup"]
                to_first = marks["first_step"] - start + (compile_s or 0.0)
        values = {
            "imports_s": imports,
            "data_s": data,
            "process_group_s": process_group,
            "setup_s": setup,
            "compile_s": compile_s,
            "to_first_step_s": to_first,
            "train_s": self.seconds(),
            "val_s": self.val_seconds,
            "test_s": self.test_seconds,
            "teardown_s": self.teardown_seconds,
        }
        return {key: None if value is None else round(max(0.0, value), 3) for key, value in values.items()}

    def _compile_overhead(self) -> float | None:
        if not self.compile or not self.steps:
            return None
        steady = statistics.median(self.steps[1:]) if len(self.steps) > 1 else 0.0
        return max(0.0, self.steps[0] - steady)


class RunClock(PhaseClock):
    """The run's clock: its phases (``PhaseClock``), the images trained, what Lightning did per
    epoch, the attempt's heartbeat, and what stopped the run (Lightning turns Ctrl-C into an exit)."""

    def __init__(
        self,
        global_batch: int,
        attempts: AttemptLog | None = None,
        *,
        started: float | None = None,
        imported: float | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__(started, imported=imported, compile=compile)
        self.global_batch = global_batch
        self.attempts = attempts
        self.train_images = 0
        self.accumulation_by_epoch: dict[int, int] = {}
        self.stopped_by: BaseException | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self.train_images += self.global_batch
        self._beat()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        # read at the end: GradientAccumulationScheduler sets the factor in its own epoch-start hook
        self.accumulation_by_epoch[trainer.current_epoch] = trainer.accumulate_grad_batches
        self._beat(epochs=trainer.current_epoch + 1, force=True)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.stopped_by = self.stopped_by or exception
        self._beat(force=True)  # the training done since the last heartbeat counts too

    def images_per_second(self) -> float | None:
        seconds = self.seconds()
        return round(self.train_images / seconds, 2) if self.train_images and seconds else None

    def _beat(self, epochs: int | None = None, force: bool = False) -> None:
        if self.attempts is None:  # a benchmark timing the loop alone
            return
        self.attempts.beat(
            train_s=self.seconds(), images=self.train_images, epochs=epochs, timing=self.block, force=force
        )
