"""The library internals the package leans on are still there, in the shape it uses them.

Six places use what a library does not promise to keep (each says why at its use):
submitit's private sbatch text builder (``submit.executors.sbatch_text``: ``--dry-run`` shows the exact
script), Lightning's ``WandbLogger._wandb_init`` (``training.run_loggers``: drop its ``anonymous`` argument, which
W&B answers with a warning at every start), Lightning's CSV ``ExperimentWriter`` privates
(``training.metrics_log``: one metrics.csv that every attempt continues), the Trainer's checkpoint
connector (``training.checkpoint_policy``: the best checkpoint kept in memory), the LR Lightning's SWA
keeps in ``_swa_lrs`` (``training.callbacks``: SWA's LR a fraction of the LR finder's pick) and the stdlib's pure-Python
``pickle._Pickler`` (``data.cifar_files``: generated data pickled like the official Python 2 files).

A release that changes one of them would not fail loudly where it is used (``getattr`` defaults, a method
override that is never called): it would make the dry run lie, bring a warning back, or delete a resumed
run's metrics. These tests fail first, naming the library, its version and what to look at.
``pyproject.toml`` bounds those libraries below their next major version for the same reason.
"""

from __future__ import annotations

import inspect
import pickle
import sys

import pytest


def _where(module) -> str:
    return f"{module.__name__} {getattr(module, '__version__', '?')}"


def test_submitit_private_sbatch_text_builder(tmp_path):
    submitit = pytest.importorskip("submitit")
    executor = submitit.SlurmExecutor(tmp_path, python="python3")
    for name in ("_make_submission_file_text", "_submitit_command_str"):
        assert hasattr(executor, name), (
            f"{_where(submitit)}: SlurmExecutor.{name} is gone; submit/executors.py's sbatch_text builds the "
            "dry run's script with it (see how submitit's own _internal_process_submissions does now)"
        )
    text = executor._make_submission_file_text(executor._submitit_command_str, "dry-run")
    assert text.startswith("#!/bin/bash") and "#SBATCH" in text and "submitit" in text, (
        f"{_where(submitit)}: its private sbatch text builder no longer returns a script"
    )


def test_lightning_wandb_logger_init_arguments(tmp_path):
    import lightning
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(save_dir=str(tmp_path), offline=True)
    init = getattr(logger, "_wandb_init", None)
    assert isinstance(init, dict) and "anonymous" in init, (
        f"{_where(lightning)}: WandbLogger._wandb_init (the arguments it passes to wandb.init) changed; "
        "training/run_loggers.py drops its 'anonymous' key there"
    )


def test_lightning_csv_experiment_writer_privates():
    import lightning
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    source = inspect.getsource(ExperimentWriter.__mro__[1].__init__)
    assert hasattr(ExperimentWriter, "_check_log_dir_exists") and "_check_log_dir_exists()" in source, (
        f"{_where(lightning)}: CSV ExperimentWriter no longer checks its log dir in _check_log_dir_exists; "
        "training/metrics_log.py overrides it so that a resumed run's metrics.csv is kept, not deleted"
    )
    for name in ("metrics_keys", "metrics_file_path", "_fs"):
        assert name in source, f"{_where(lightning)}: CSV ExperimentWriter has no {name} (training/metrics_log.py)"
    assert ExperimentWriter.NAME_METRICS_FILE == "metrics.csv"


def test_pure_python_pickler_lets_its_opcodes_be_chosen():
    assert hasattr(pickle, "_Pickler") and isinstance(pickle._Pickler.dispatch, dict), (
        f"Python {sys.version.split()[0]}: pickle._Pickler (the pure-Python pickler with a dispatch table) is gone; "
        "data/cifar_files.py's _Py2Pickler writes generated data like the official Python 2 files with it"
    )
    assert bytes in pickle._Pickler.dispatch and callable(getattr(pickle._Pickler, "save_global", None))


def test_lightning_checkpoint_connector_dumps_a_checkpoint(tmp_path):
    """training/checkpoint_policy.py's BestInMemory keeps what ModelCheckpoint would write, made by the
    Trainer's (private) checkpoint connector, as trainer.save_checkpoint makes it."""
    import inspect

    import lightning
    import lightning.pytorch as pl

    trainer = pl.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    dump = getattr(getattr(trainer, "_checkpoint_connector", None), "dump_checkpoint", None)
    assert callable(dump) and "weights_only" in inspect.signature(dump).parameters, (
        f"{_where(lightning)}: Trainer._checkpoint_connector.dump_checkpoint(weights_only) changed; "
        "training/checkpoint_policy.py keeps the best checkpoint in memory with it"
    )


def test_lightning_swa_reads_its_lr_when_it_starts():
    """training/callbacks.py's SwaAtPeakFraction sets StochasticWeightAveraging._swa_lrs at fit start
    (after the LR finder's pick): Lightning must still read it only when SWA starts."""
    import lightning
    from lightning.pytorch.callbacks import StochasticWeightAveraging

    swa = StochasticWeightAveraging(swa_lrs=0.01)
    assert getattr(swa, "_swa_lrs", None) == 0.01, f"{_where(lightning)}: SWA keeps its LR elsewhere than _swa_lrs"
    assert "self._swa_lrs" in inspect.getsource(StochasticWeightAveraging.on_train_epoch_start), (
        f"{_where(lightning)}: SWA no longer reads _swa_lrs as it starts; training/callbacks.py sets SWA's LR there"
    )
    assert "_swa_lrs" not in inspect.getsource(StochasticWeightAveraging.on_fit_start)
