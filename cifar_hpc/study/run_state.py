"""The states a run of a study can be in: one small enum that the study folder's reader
(``study.recorded``) and the classifier (``study.states``) share."""

from __future__ import annotations

from enum import Enum


class RunState(str, Enum):
    """Where a run stands. The values are what JSON output and tables show."""

    COMPLETED = "completed"
    FAILED = "failed"
    CORRUPT = "corrupt"
    RUNNING = "running"
    PENDING = "pending"
    REQUEUED = "requeued"
    MISSING = "missing"
    UNKNOWN = "unknown"

    @property
    def in_progress(self) -> bool:
        """Slurm still holds it: queued, running, or waiting to restart."""
        return self in (RunState.PENDING, RunState.RUNNING, RunState.REQUEUED)

    @property
    def ended(self) -> bool:
        """Nothing more will happen to it without a resubmission."""
        return self in (RunState.COMPLETED, RunState.FAILED, RunState.CORRUPT, RunState.MISSING)

    @property
    def plan_word(self) -> str:
        """What ``grid show`` calls it, in the words of someone planning a study: ``queued`` for
        pending, ``not run`` for missing (never submitted, or gone: ``submit`` would submit it)."""
        return {RunState.PENDING: "queued", RunState.MISSING: "not run"}.get(self, self.value)
