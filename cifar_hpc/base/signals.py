"""Signals and who owns them: the one requeue signal, who acts on it, and noticing a SIGTERM.

**The requeue** has one owner per process. ``REQUEUE_SIGNAL`` is the signal of ``#SBATCH --signal``,
of submitit and of Lightning's ``SLURMEnvironment``; ``REQUEUE_BY_PARENT`` marks a process whose
parent owns it (the processes of a shared GPU, ``training.pack.run_shared``).

**A SIGTERM noticed wherever it strikes**, so that a run stopped from outside is never recorded failed.

Slurm sends SIGTERM to every process of a job it cancels, requeues, preempts or times out. Under
submitit the signal is only logged (its handler lets it pass) and the job is killed ``KillWait``
seconds later. Lightning notices it only inside ``fit`` and ``test``, where its own handler is up;
but the same signal kills W&B's service process, and the run's next W&B call then fails with an
ordinary ``ConnectionResetError`` — during set-up, between fit and test, in the teardown, or in the
next run of a pack. Without a record of the signal that error reads as the run's own failure, and a
requeued pack keeps it (``attempts.failed_in_this_job``).

``watching()`` installs a handler that notes the signal and then calls the one it replaced; it
does so only where a handler lets SIGTERM pass (with the default action the process just dies,
and Lightning's graceful stop inside fit stays as it is). Inside fit Lightning chains to it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

REQUEUE_SIGNAL = signal.SIGUSR2
"""The one requeue signal: ``#SBATCH --signal=USR2@90`` in slurm/train.sbatch, submitit's own signal,
and the one given to Lightning's SLURMEnvironment (``training.train``, its auto-requeue off). The run
notes it and saves at the end of the step in flight (``training.checkpoint_policy``), then exactly one
requeues: submitit for `cifar-hpc submit`, the run itself (``scontrol requeue``) for plain sbatch jobs."""

REQUEUE_BY_PARENT = "CIFAR_HPC_REQUEUE_BY_PARENT"
"""Set in the processes of ``run_shared``: their parent owns the requeue, so they leave Lightning's
auto-requeue off and ignore ``REQUEUE_SIGNAL``."""

_received = False
_depth = 0


def received() -> bool:
    """A SIGTERM reached this process while ``watching()`` (the outermost one) was active."""
    return _received


@contextmanager
def watching() -> Iterator[None]:
    """Note SIGTERMs for the duration (a run, or a pack of runs: nested uses share one record)."""
    global _received, _depth
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or not callable(previous) and _depth == 0:
        yield  # handlers only in the main thread; nothing lets SIGTERM pass: it ends the process
        return
    outermost = _depth == 0
    if outermost:
        _received = False

        def note(signum, frame) -> None:
            global _received
            _received = True
            previous(signum, frame)

        signal.signal(signal.SIGTERM, note)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if outermost:
            signal.signal(signal.SIGTERM, previous)
