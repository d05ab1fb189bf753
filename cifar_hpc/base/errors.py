"""The exceptions the CLI reports without a traceback.

``UserError`` ("the user asked for something wrong") becomes a single line on stderr and exit code
2; ``Interrupted`` (Ctrl-C) a line saying how to resume and exit code 130. Anything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: an unknown name, an impossible size, a missing or corrupt data dir, ..."""


class Interrupted(Exception):
    """The user stopped a command (Ctrl-C) at a point it can resume from: the CLI says so and exits 130."""


class Terminated(SystemExit):
    """A SIGTERM stopped the attempt (Slurm cancelled, requeued or preempted the job, or its time ran
    out): not the run's failure. A ``SystemExit`` like Lightning's own ``SIGTERMException``, so that
    nothing that catches ``Exception`` (a pack going on after a failed run) carries on in a dying job."""
