"""A run's log, whichever executor ran it: where it is, how a local run writes it, how ``logs`` reads it.

* **Slurm**: submitit's log of the run's array task, ``submitit/<job>/<job>_<rank>_log.out`` (stdout
  and stderr together: ``stderr_to_stdout``; one file per rank, every rank's shown). A task of a pack
  (``submit --pack``) trains several runs one after another into one log; ``cifar_hpc.training.pack`` starts
  each with ``pack: run i of n: <run_id>``, so ``logs`` shows only the parts from that run's marker to
  the next (``pack_part``). A pack with ``--per-gpu K`` interleaves K processes: not separable.
* **Local** (``submit --executor local``): ``<run folder>/train.log``, appended to by every attempt. It
  lives with the run's other files (config, result, attempts, checkpoints): found without
  ``study.json``, moved or copied with the run. Whichever process trains it, the log gets a logging
  handler for the duration (``capture``): the console's lines (``cifar_hpc.base.console``: INFO and up,
  the chatter held back unless ``-v``; the epoch lines even where a terminal's bar stands for them on
  the console) with their time, the warnings, and one line if the run is stopped (Ctrl-C, SIGTERM: no
  traceback unless ``-v``); the executor adds the end line (``COMPLETED ...``/``FAILED ...``). A run in
  a spawned process (``--parallel``, ``child_output``) also writes there what its Python code prints
  (time-stamped, ``console.LinesAsRecords``) and what reaches its file descriptors otherwise (a crash's
  dump, C libraries), and sends its console's lines to the parent's
  console (``forwarded_console``), each after its run's id: ``[1a2b3c4d5e6f] INFO ...``.

  Why a queue for those (the standard library's ``QueueHandler``/``QueueListener``) rather than the
  parent tailing each log: the records keep their level and logger, the worker's console filters
  (chatter, ``-v``) apply once, and nothing is parsed back out of a file or polled for.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cifar_hpc.base import console
from cifar_hpc.base.errors import Interrupted, Terminated
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


def _file_handler(path: Path) -> logging.FileHandler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    return handler


def _record(text: str, name: str = "cifar_hpc", level: int = logging.INFO, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 0, text, None, exc_info)


def write_line(path: Path, text: str) -> None:
    """Append one time-stamped line to a run's log (the end line of a ``--parallel`` run, said by the
    parent once its worker is done)."""
    handler = _file_handler(path)
    try:
        handler.handle(_record(text))
    finally:
        handler.close()


def stopped_line(error: BaseException) -> str | None:
    """The one line a run stopped from outside leaves (Ctrl-C, SIGTERM), or None for a crash (a bug:
    it keeps its traceback)."""
    if isinstance(error, Interrupted):
        return str(error)
    if isinstance(error, KeyboardInterrupt):
        return "interrupted by Ctrl-C before training began"
    if isinstance(error, Terminated) and str(error):
        return str(error)
    if isinstance(error, SystemExit):  # Lightning's SIGTERMException, an exit: what stopped it, not where
        return f"run stopped by {type(error).__name__}"
    return None


@contextmanager
def capture(path: Path) -> Iterator[Callable[[str], None]]:
    """Append what this process logs (INFO and up, every logger) and its warnings to ``path`` while
    the block runs; an exception leaving the block is written in one line if it stopped the run from
    outside (``stopped_line``; its traceback too with ``-v``), else with its traceback. Yields a
    function that writes one line to the file only (the run's start and end lines)."""
    # the console's own set-up (cifar_hpc.base.console): every logger reaches the root at INFO, the
    # console's handler holds back the chatter; the file gets the same lines, with their time
    handler = console.attach(_file_handler(path))
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.setLevel(logging.INFO)
    handler.addFilter(_not_chatter)
    shown = warnings.showwarning

    def show_and_keep(message, category, filename, lineno, file=None, line=None):
        note(warnings.formatwarning(message, category, filename, lineno, line).rstrip(), "py.warnings", logging.WARNING)
        shown(message, category, filename, lineno, file, line)

    def note(text: str, name: str = "cifar_hpc", level: int = logging.INFO, exc_info=None) -> None:
        handler.handle(_record(text, name, level, exc_info))

    warnings.showwarning = show_and_keep
    try:
        yield note
    except BaseException as error:
        stopped = stopped_line(error)
        trace = (type(error), error, error.__traceback__)
        if stopped is None:
            note(f"run stopped by {type(error).__name__}", level=logging.ERROR, exc_info=trace)
        else:
            note(stopped, level=logging.WARNING, exc_info=trace if console.verbose_from_env() else None)
        raise
    finally:
        warnings.showwarning = shown
        logging.getLogger().removeHandler(handler)
        handler.close()


_parent_console: Any = None
"""In a ``--parallel`` worker: the queue to its parent's console (``forwarded_console``)."""


@contextmanager
def forwarded_console(context: Any) -> Iterator[Any]:
    """A queue (of the multiprocessing ``context``) for the workers' console lines, printed on this
    process's console as they come, each after its run's id; give it to each worker's
    ``console_to_parent`` (a ``ProcessPoolExecutor`` initializer: a queue goes to a spawned process
    only when it starts)."""
    queue = context.Queue()
    listener = logging.handlers.QueueListener(queue, console.to_stderr("[%(run)s] " + console.LOG_FORMAT))
    listener.start()
    try:
        yield queue
    finally:
        listener.stop()  # after the workers: prints what they sent last


def console_to_parent(queue: Any) -> None:
    global _parent_console
    _parent_console = queue


@contextmanager
def child_output(path: Path, run_id: str) -> Iterator[Callable[[str], None]]:
    """A spawned worker of ``--parallel`` trains one run at a time: while the block runs, its whole
    output (file descriptors 1 and 2: prints, tracebacks, what C libraries write) is appended to the
    run's log ``path``, its logging and warnings as ``capture`` writes them (yields its ``note``), and
    its console's lines go to the parent's console (``console_to_parent``; nowhere without one: the log
    has them), tagged with ``run_id``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    console.configure()  # a spawned process has no handler yet: cifar_hpc's INFO lines would be lost
    forward: logging.Handler = logging.NullHandler()
    if _parent_console is not None:
        forward = logging.handlers.QueueHandler(_parent_console)
        forward.addFilter(lambda record: setattr(record, "run", run_id) or True)
    console.send_to(forward)
    shown = warnings.showwarning

    def warn_parent(message, category, filename, lineno, file=None, line=None):
        text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
        console.show(_record(text, "py.warnings", logging.WARNING))  # capture writes it to the log

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    warnings.showwarning = warn_parent
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = console.LinesAsRecords(streams[0], "stdout"), console.LinesAsRecords(streams[1], "stderr")
    try:
        with capture(path) as note:
            try:
                yield note
            finally:  # a last line without its newline, while the log's handler is still there
                sys.stdout.flush()
                sys.stderr.flush()
    finally:
        sys.stdout, sys.stderr = streams
        warnings.showwarning = shown
        console.send_to(None)
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
