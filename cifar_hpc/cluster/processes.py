"""Is the process that runs a local study still alive? (``status`` of runs the local executor trains.)

``cifar-hpc submit --executor local`` trains its runs inside its own process (or its spawned
children), so nothing like Slurm's queue can be asked. It records *which process* it is in
``study.json`` as its runs start (``JobRecord.host``, ``pid``, ``process_start``): a run without a
result is then training or waiting its turn while that process lives, and was stopped (Ctrl-C,
killed, the machine rebooted) once it does not.

A pid alone is not an identity: pids are reused. ``process_start`` adds when the process started
(Linux: ``/proc/<pid>/stat`` field 22, clock ticks since boot) and which boot it was
(``/proc/sys/kernel/random/boot_id``), so a new process that got the same pid, or the same pid after
a reboot, is not taken for the old one. Only the host that ran it can check; from another host
(a login node reading a shared results folder) the answer is "cannot tell".
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessRef:
    host: str
    pid: int
    start: str | None
    """``<boot id>/<start ticks>``; None where /proc cannot say (then the pid alone is checked)."""


def start_token(pid: int) -> str | None:
    """When process ``pid`` started, as ``<boot id>/<clock ticks since boot>``; None if unknown or gone."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        # the command name (field 2) may hold spaces and parentheses: split after its last ")"
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        state, ticks = fields[0], fields[19]
    except (OSError, IndexError):
        return None
    return None if state in ("Z", "X") else f"{boot}/{ticks}"  # a zombie has ended, only not been reaped


def this_process() -> ProcessRef:
    return ProcessRef(socket.gethostname(), os.getpid(), start_token(os.getpid()))


def alive(ref: ProcessRef) -> bool | None:
    """True: that very process still runs; False: it ended; None: it ran on another host (cannot tell)."""
    if ref.host != socket.gethostname():
        return None
    if ref.start is not None and Path("/proc").is_dir():
        return start_token(ref.pid) == ref.start  # None (gone) or another process's start: not it
    try:
        os.kill(ref.pid, 0)  # no /proc (macOS): the pid alone
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True
