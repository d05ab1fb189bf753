"""The run's CSV metrics log: ONE ``<run>/logs/metrics.csv`` that every attempt of the run continues.

Lightning's ``CSVLogger`` gives each attempt its own ``logs/version_N/`` folder (a requeued run's
history split over several files), and with a fixed ``version`` it deletes the ``metrics.csv`` it
finds there, since it assumes a new experiment (``_ExperimentWriter._check_log_dir_exists``). A
resumed attempt is the same experiment, so here the file is kept and its header is read back,
so that Lightning's writer appends below it (and rewrites it with a wider header when new
columns appear). Steps that an interrupted attempt ran after its last checkpoint are run again by
the next one, and so appear twice, once per attempt that ran them.
"""

from __future__ import annotations

import csv
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

LOG_DIR = "logs"
METRICS_FILE = ExperimentWriter.NAME_METRICS_FILE


def metrics_csv(out_dir: Path) -> Path:
    """Where a run's metrics are: ``<run>/logs/metrics.csv``."""
    return Path(out_dir) / LOG_DIR / METRICS_FILE


class _ContinuingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Lightning removes metrics.csv here; instead keep it and take its columns as the ones known
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                self.metrics_keys = sorted(next(csv.reader(handle), []))


class RunCsvLogger(CSVLogger):
    """Lightning's ``CSVLogger`` writing ``<out_dir>/logs/metrics.csv`` (and ``hparams.yaml``),
    continued by every attempt of the run."""

    def __init__(self, out_dir: Path) -> None:
        # version="": log_dir is logs/ itself, no version_N folder. Rows are appended as they are logged
        # (Lightning's default holds 100 steps back): an attempt killed outright (SIGKILL, OOM, a lost
        # node) keeps every row up to its end; one small append per logged step (every <= 50 steps).
        super().__init__(save_dir=str(out_dir), name=LOG_DIR, version="", flush_logs_every_n_steps=1)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.log_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment
