"""A run's log, whichever executor ran it: where it is, how a local run writes it, how ``logs`` reads it.

* **Slurm**: submitit's log of the run's array task, ``submitit/<job>/<job>_<rank>_log.out`` (stdout
  and stderr together: ``stderr_to_stdout``; one file per rank, every rank's shown). A task of a pack
  (``submit --pack``) trains several runs one after another into one log; ``cifar_hpc.training.pack`` starts
  each with ``pack: run i of n: <run_id>``, so ``logs`` shows only the parts from that run's marker to
  the next (``pack_part``). A pack with ``--per-gpu K`` interleaves K processes: not separable.
* **Local** (``submit --executor local``): ``<run folder>/train.log``, appended to by every attempt. It
  lives with the run's other files (config, result, attempts, checkpoints): found without
  ``study.json``, moved or copied with the run. A run trained in the submit's own process gets a
  logging handler for the duration (``capture``): the console's lines (``cifar_hpc.base.console``: INFO
  and up, the chatter held back unless ``-v``) with their time, and the warnings; a run in a spawned process (``--parallel``) writes its whole
  output there (``child_output``).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cifar_hpc.base import console
from cifar_hpc.cluster import slurm
from cifar_hpc.study.recorded import LOCAL_LOG, RecordedRun, Study, load_study
from cifar_hpc.study.run_state import RunState
from cifar_hpc.study.states import RunStatus, classify
from cifar_hpc.training.pack import PACK_MARKER

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def local_log(out_dir: str | Path) -> Path:
    return Path(out_dir) / LOCAL_LOG


# --- writing: a local run's log -------------------------------------------------------------------


CHATTER = ("wandb",)
"""Loggers whose lines below WARNING stay out of the run's log: W&B's start-up and teardown (~25 lines a
run) are in its own ``wandb/.../logs/debug.log`` already."""


def _not_chatter(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or not record.name.startswith(CHATTER)


@contextmanager
def capture(path: Path) -> Iterator[Callable[[str], None]]:
    """Append what this process logs (INFO and up, every logger) and its warnings to ``path`` while
    the block runs; an exception leaving the block is written with its traceback. Yields a function
    that writes one line to the file only (the run's end line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # the console's own set-up (cifar_hpc.base.console): every logger reaches the root at INFO, the
    # console's handler holds back the chatter; the file gets the same lines, with their time
    handler = console.attach(logging.FileHandler(path, mode="a", encoding="utf-8"))
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.setLevel(logging.INFO)
    handler.addFilter(_not_chatter)
    shown = warnings.showwarning

    def show_and_keep(message, category, filename, lineno, file=None, line=None):
        note(warnings.formatwarning(message, category, filename, lineno, line).rstrip(), "py.warnings", logging.WARNING)
        shown(message, category, filename, lineno, file, line)

    def note(text: str, name: str = "cifar_hpc", level: int = logging.INFO, exc_info=None) -> None:
        handler.handle(logging.LogRecord(name, level, __file__, 0, text, None, exc_info))

    warnings.showwarning = show_and_keep
    try:
        yield note
    except BaseException as error:
        note(
            f"run stopped by {type(error).__name__}",
            level=logging.ERROR,
            exc_info=(type(error), error, error.__traceback__),
        )
        raise
    finally:
        warnings.showwarning = shown
        logging.getLogger().removeHandler(handler)
        handler.close()


@contextmanager
def child_output(path: Path) -> Iterator[None]:
    """This process's whole output (file descriptors 1 and 2: prints, logging, warnings, tracebacks,
    what C libraries write) appended to ``path`` while the block runs: a spawned worker of
    ``--parallel`` trains one run at a time, so its output is that run's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    console.configure()  # a spawned process has no handler yet: cifar_hpc's INFO lines would be lost
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield
    except BaseException:
        import traceback

        traceback.print_exc()
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


# --- reading: `cifar-hpc logs` --------------------------------------------------------------------


@dataclass
class RunLog:
    study: Study
    run: RecordedRun
    files: list[Path]
    """Its log files (every rank's for Slurm); may not exist yet."""
    pack: bool
    """Its Slurm task trains other runs too: show only its part (``pack_part``)."""
    where: str
    """``slurm job <id>`` or ``local``: who ran it, for the messages."""


def run_log(study: Study, run: RecordedRun) -> RunLog:
    if run.slurm is not None:
        files = []
        if run.slurm.log:
            first = Path(run.slurm.log)
            # every rank's log (a multi-node run has one per task), rank 0's first
            files = sorted(first.parent.glob(first.name.replace("_0_log.", "_*_log.")), key=_rank) or [first]
        return RunLog(study, run, files, run.slurm.pack > 1, f"Slurm job {run.slurm.job}")
    log = Path(run.local.log) if run.local is not None else local_log(study.root / run.run_id)
    return RunLog(study, run, [log], False, "local")


def _rank(path: Path) -> tuple[int, str]:
    parts = path.name.split("_")
    return (int(parts[-3]) if len(parts) >= 3 and parts[-3].isdigit() else 0, path.name)


def pack_part(lines: Iterable[str], run_id: str, inside: bool = False) -> tuple[list[str], bool]:
    """The lines of a shared pack log that belong to ``run_id``: from each ``pack: run i of n: <id>``
    marker naming it up to the next marker (a requeued pack starts it again: every part is kept).
    ``inside``: whether the previous lines ended inside its part (for following); returns it anew."""
    kept = []
    for line in lines:
        if PACK_MARKER in line and ": " in line.split(PACK_MARKER, 1)[1]:
            inside = line.rstrip().endswith(run_id)
        if inside:
            kept.append(line)
    return kept, inside


def current_status(log: RunLog, runner: slurm.Runner = slurm.call) -> RunStatus:
    """The run's state now (its study read again, Slurm asked about its job only)."""
    study = load_study(log.study.root, check_mixing=False)
    run = study.runs.get(log.run.run_id, log.run)
    jobs = slurm.query_jobs([run.slurm.job], runner) if run.slurm is not None else None
    return classify(run, jobs)


def nothing_yet(log: RunLog, status: RunStatus) -> str:
    """What to say when the run's log holds nothing (of its own) yet."""
    if status.state in (RunState.PENDING, RunState.REQUEUED) or (
        status.state is RunState.RUNNING and not any(path.exists() for path in log.files)
    ):
        return f"run {log.run.run_id} has not started yet ({status.state.value}: {status.note})"
    where = ", ".join(str(p) for p in log.files) or "no log recorded"
    return f"run {log.run.run_id} has no log yet ({status.state.value}; looked in {where})"


class Reader:
    """Reads what each log file gained since the last call, whole lines only, a pack's part only."""

    def __init__(self, log: RunLog) -> None:
        self.log = log
        self.offsets = {path: 0 for path in log.files}
        self.rest = {path: "" for path in log.files}
        self.inside = {path: False for path in log.files}
        self.last: Path | None = None

    def new_text(self, final: bool = False) -> str:
        out = []
        for path in self.log.files:
            try:
                with open(path, "rb") as handle:
                    handle.seek(self.offsets[path])
                    data = handle.read()
            except FileNotFoundError:
                continue
            self.offsets[path] += len(data)
            text = self.rest[path] + data.decode("utf-8", errors="replace")
            lines = text.splitlines(keepends=True)
            self.rest[path] = lines.pop() if lines and not lines[-1].endswith("\n") and not final else ""
            if self.log.pack:
                lines, self.inside[path] = pack_part(lines, self.log.run.run_id, self.inside[path])
            if lines:
                if len(self.log.files) > 1 and self.last != path:
                    out.append(f"==> {path} <==\n")
                self.last = path
                out.extend(lines)
        return "".join(out)


def follow(
    log: RunLog,
    write: Callable[[str], None],
    *,
    interval_s: float = 1.0,
    status: Callable[[], RunStatus] | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> RunStatus:
    """Print the log as it grows until the run is no longer pending, running or requeued (then the
    rest), like ``tail -f``; says once when it waits for the run to start. Returns the last status."""
    status = status or (lambda: current_status(log))
    reader = Reader(log)
    waiting_said = wrote = False
    while True:
        now = status()
        if not now.state.in_progress:
            text = reader.new_text(final=True)
            if text:
                write(text)
            elif not wrote:  # it ended (or was never going to start) without a log of its own
                say(nothing_yet(log, now))
            return now
        text = reader.new_text()
        if text:
            write(text)
            wrote = True
        elif not waiting_said and not any(p.exists() for p in log.files):
            say(f"waiting for run {log.run.run_id} to start ({now.state.value}: {now.note})")
            waiting_said = True
        time.sleep(interval_s)
