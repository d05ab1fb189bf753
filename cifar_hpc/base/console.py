"""What reaches the console: the one place where logging, library warnings and W&B's chatter are set up.

Called by the CLI (the app's callback, with ``-v/--verbose``) and by ``train.run`` and
``pack.run_pack``, so that the processes that never go through the CLI (a Slurm job that submitit
starts, the local executor's worker processes, the processes of a shared GPU) print the same way.
Calling it again is cheap and changes nothing (a pack calls it once per run); it must be called
after Lightning is imported too, since Lightning adds its own handler then (``train.run`` does).

Quiet (the default): our own lines and the per-epoch progress lines, every warning and error, and
each of Lightning's lines once; what a user does not need is held back: Lightning's start-up chatter
(``LIGHTNING_CHATTER``), library warnings known to be harmless here (``HARMLESS_WARNINGS``, each
with why) and W&B's information lines (its warnings and errors still show). Verbose: all of it.

The choice travels to child processes and Slurm jobs (sbatch copies the submitter's environment) in
``VERBOSE_ENV``; W&B reads its own settings from the environment when it starts (``WANDB_QUIET``,
``WANDB_SHOW_INFO``): it prints its run header through a process-wide switch that arguments to
``wandb.init`` do not reach. Outside a terminal tqdm's bars are off (``TQDM_DISABLE``): Lightning's
LR finder draws one whatever ``enable_progress_bar`` says.

A terminal (``progress_bar``: stdout, where Lightning draws its bar, and stderr) shows a run's epochs
in Lightning's bar, so a line logged with ``extra=FILE_ONLY`` (the epoch line) stays off the console
there; a run's log (``attach``) gets it all the same. A ``--parallel`` worker, whose stderr is its
run's log, sends its console's lines to its parent's console instead (``send_to``).
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
import warnings

VERBOSE_ENV = "CIFAR_HPC_VERBOSE"
"""``1``: show everything (``cifar-hpc -v``); read by processes that do not go through the CLI."""

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"

FILE_ONLY = {"file_only": True}
"""``extra`` of a line for a run's log, not the console, where a terminal's progress bar says the same."""

LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")
"""Loggers to which Lightning attaches its own stderr handler on import: with ours on the root
logger every line of Lightning was printed twice (``INFO: …`` and ``INFO lightning.pytorch…: …``)."""

LIGHTNING_CHATTER = (
    # the hardware summary: result.json records the accelerator, devices and world size
    r"(GPU|TPU|HPU|IPU) available: ",
    r"LOCAL_RANK: \d+ - CUDA_VISIBLE_DEVICES",
    r"Initializing distributed: ",
    r"-+\ndistributed_backend=",
    # the requeue is set up on purpose (signals.REQUEUE_SIGNAL)
    r"SLURM auto-requeueing enabled",
    # the normal end of fit; the progress lines already show the last epoch
    r"`Trainer\.fit` stopped: `max_(epochs|steps)=",
    # Ctrl-C: the run says in one line where it stopped and how it resumes (unfinished.end_unfinished)
    r"\s*Detected KeyboardInterrupt, attempting graceful shutdown",
    # the test loads the best checkpoint, the LR finder its own temporary one; a resumed run says so
    # itself (train.run: "run ... resumes from ...")
    r"Restoring states from the checkpoint path at ",
    r"Restored all states from the checkpoint at ",
    r"Loaded model weights from the checkpoint at ",
    r"`weights_only` was not set",
    # SWA takes over the schedule by design (cifar_hpc/training/tricks.py)
    r"Swapping scheduler `",
)
"""Lightning's INFO lines that a user of this tool does not need (shown with ``-v``)."""

LIGHTNING_ADVERT = "litlogger"
"""Lightning advertises a hosted service at every start: not ours to print, even with ``-v``."""

HARMLESS_WARNINGS = (
    # Lightning suggests `srun` whenever the command exists and the process is not inside a Slurm
    # allocation (no SLURM_NTASKS): that is the local executor and `cifar-hpc train` on a login node or
    # workstation, which run here on purpose. Inside an allocation, where forgetting srun would hang DDP,
    # the variable is set and Lightning does not warn at all; our jobs run under srun (executors.py).
    (
        r"The `srun` command is available on your system but is not used",
        r"lightning\.fabric\.plugins\.environments\.slurm",
    ),
    # torch deprecated the LeafSpec class that Lightning's own pytree helper still builds; nothing
    # changes for us (it is Lightning's to update, and does not touch our results)
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"lightning\.pytorch\.utilities\._pytree"),
    # our schedule steps every optimizer step; Lightning's SWA swaps it for its epoch-wise SWALR at
    # swa_epoch_start, which is the design: the main schedule is laid out over the epochs before SWA
    # starts, so it has finished its shape when SWA takes over (cifar_hpc/training/tricks.py, "SWA replaces the
    # LR scheduler")
    (r"SWA is currently only supported every epoch", r"lightning\.pytorch\.callbacks\.stochastic_weight_avg"),
    # a requeued or resumed run writes into its own checkpoint folder (run_folder.claim refuses another
    # run's folder), and ModelCheckpoint only ever deletes files it saved itself
    (r"Checkpoint directory .* exists and is not empty", r"lightning\.pytorch\.callbacks\.model_checkpoint"),
)
"""(message regex, module regex) of library warnings filtered where they are raised (``warnings``)."""

WANDB_QUIET_ENV = {"WANDB_QUIET": "true", "WANDB_SHOW_INFO": "false"}
"""W&B's own settings: no header, footer or history panel, no information lines; W&B's warnings and
errors (``show_warnings``/``show_errors``) still print. A value the user set is left alone."""

_wandb_env_set: set[str] = set()
"""The W&B variables this process set (and may take back for ``-v``)."""


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (test runners and tools swap it), or hands its
    lines to ``forward`` (``send_to``)."""

    forward: logging.Handler | None = None

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "file_only", False) and super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        if self.forward is not None:
            self.forward.handle(record)
        else:
            super().emit(record)


class _HideChatter(logging.Filter):
    """Drops Lightning's INFO lines that match ``LIGHTNING_CHATTER``, unless verbose."""

    def __init__(self) -> None:
        super().__init__()
        self.verbose = False
        self._pattern = re.compile("|".join(f"(?:{p})" for p in LIGHTNING_CHATTER), re.DOTALL)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO or not record.name.startswith(("lightning", "pytorch_")):
            return True
        message = record.getMessage()
        if LIGHTNING_ADVERT in message:
            return False
        return self.verbose or self._pattern.match(message) is None


def verbose_from_env() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def configure(verbose: bool | None = None) -> None:
    """Set up this process's console. ``verbose`` None: as ``VERBOSE_ENV`` says (a job, a worker);
    True/False (the CLI): that, and passed on to the processes this one starts."""
    if verbose is None:
        verbose = verbose_from_env()
    else:
        os.environ[VERBOSE_ENV] = "1" if verbose else "0"
    _chatter_filter().verbose = verbose
    _adopt_lightning_loggers()
    _filter_warnings(not verbose)
    _quiet_wandb(not verbose)
    if not verbose and not progress_bar():
        # Lightning's LR finder draws its own tqdm bar ("Finding best initial lr") whatever
        # enable_progress_bar says: in a Slurm log or a pipe it is one long line of \r updates.
        # tqdm reads TQDM_* when it is imported (with Lightning), so this is set before that; the
        # processes this one starts (jobs, workers) inherit it
        os.environ.setdefault("TQDM_DISABLE", "1")


def progress_bar() -> bool:
    """Whether progress bars are drawn: on a terminal, stdout (where Lightning draws its bar) and stderr
    both; else (a Slurm log, CI, a pipe, ``> out.txt``) one line per epoch, without \\r or escape codes."""
    return sys.stdout.isatty() and sys.stderr.isatty()


def send_to(handler: logging.Handler | None) -> None:
    """This process's console lines (after its filters) go to ``handler`` instead of stderr; None: back
    to stderr. A ``--parallel`` worker's stderr is its run's log, which has them already: its parent
    prints them (``cifar_hpc.study.run_logs``)."""
    _root_handler().forward = handler


def show(record: logging.LogRecord) -> None:
    """Print ``record`` on this process's console only (not in a run's log), as the console prints."""
    _root_handler().handle(record)


def to_stderr(fmt: str = LOG_FORMAT) -> logging.Handler:
    """A handler writing to whatever ``sys.stderr`` is, in ``fmt``: for lines already filtered by the
    process that sent them (a ``--parallel`` worker's)."""
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter(fmt))
    return handler


def attach(handler: logging.Handler) -> logging.Handler:
    """Send the console's lines to ``handler`` too (a run's own log file), in the console's format and
    with its chatter held back the same way; ``logging.getLogger().removeHandler(handler)`` ends it."""
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(_chatter_filter())
    logging.getLogger().addHandler(handler)
    return handler


def _chatter_filter() -> _HideChatter:
    return next(f for f in _root_handler().filters if isinstance(f, _HideChatter))


def _root_handler() -> _CurrentStderr:
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _CurrentStderr)), None)
    if handler is None:
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.addFilter(_HideChatter())
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def _adopt_lightning_loggers() -> None:
    """Lightning's lines go through the root handler only. Lightning adds its handlers when it is
    imported, which may be after the CLI set the console up: ``train.run`` calls ``configure`` again."""
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:  # Lightning's own (ours is a subclass, on root)
                logger.removeHandler(handler)
        logger.propagate = True
    # submitit prints its own lines in a job (with its own handler and format): once is enough
    submitit = logging.getLogger("submitit")
    if submitit.handlers:
        submitit.propagate = False


def _is_ours(entry: tuple) -> bool:
    message = entry[1]
    return entry[0] == "ignore" and message is not None and message.pattern in {m for m, _ in HARMLESS_WARNINGS}


def _filter_warnings(quiet: bool) -> None:
    # filterwarnings puts an equal filter first again rather than adding it twice: calling again is free
    if quiet:
        for message, module in HARMLESS_WARNINGS:
            warnings.filterwarnings("ignore", message=message, module=module)
    else:
        warnings.filters[:] = [entry for entry in warnings.filters if not _is_ours(entry)]


def _quiet_wandb(quiet: bool) -> None:
    for name, value in WANDB_QUIET_ENV.items():
        if quiet and name not in os.environ:
            os.environ[name] = value
            _wandb_env_set.add(name)
        elif not quiet and name in _wandb_env_set:
            os.environ.pop(name, None)
            _wandb_env_set.discard(name)


class LinesAsRecords(io.TextIOBase):
    """A ``--parallel`` worker's ``sys.stdout``/``sys.stderr``: what Python code prints there (W&B's
    terminal lines with ``-v``, a library's ``print``) becomes one logging record per line, so that
    the run's log gets it with its time, as the lines of an in-process run are, and the parent's
    console gets it after the run's id. W&B's ``wandb: ...`` lines are records named ``wandb`` (its
    start-up then stays out of the log, as in-process, and shows on the console with ``-v``). What
    bypasses Python's streams (C libraries, a crash's dump) still reaches the file descriptors raw."""

    def __init__(self, raw: io.TextIOBase, name: str) -> None:
        self._raw, self._name, self._pending = raw, name, ""
        self._inside = threading.local()  # a record whose handling prints again goes out raw

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._raw.fileno()  # faulthandler and subprocesses write to the descriptor itself

    def write(self, text: str) -> int:
        if getattr(self._inside, "active", False):
            return self._raw.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._emit(line.rsplit("\r", 1)[-1])  # a bar's redraws: the last, as a terminal shows it
        return len(text)

    def flush(self) -> None:
        if self._pending:
            line, self._pending = self._pending, ""
            self._emit(line.rsplit("\r", 1)[-1])
        self._raw.flush()

    def _emit(self, line: str) -> None:
        import click  # typer's: W&B colours its lines with click.style

        text = click.unstyle(line).rstrip()
        if not text:
            return
        name, level = self._name, logging.INFO if self._name == "stdout" else logging.WARNING
        if text == "wandb:" or text.startswith("wandb: "):
            text = text[len("wandb:") :].strip()
            if not text:
                return  # W&B's blank spacer lines
            name, level = "wandb", logging.INFO
            for word, wandb_level in (("WARNING ", logging.WARNING), ("ERROR ", logging.ERROR)):
                if text.startswith(word):
                    text, level = text[len(word) :], wandb_level
        self._inside.active = True
        try:
            # to the root's handlers (the log's, the console's) as a record named after its source:
            # through W&B's own logger it would go to W&B's debug.log only (that logger does not propagate)
            logging.getLogger().handle(logging.LogRecord(name, level, __file__, 0, text, None, None))
        finally:
            self._inside.active = False
