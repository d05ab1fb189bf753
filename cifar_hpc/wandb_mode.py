"""Whether W&B runs online or offline: one rule for training, the study summary and doctor.

Training never waits on W&B: online only when asked for, or in ``auto`` mode when an API key is
configured (environment or ~/.netrc). No network probe: compute nodes usually have none, and a
probe that times out would stall every job. The key itself is only ever read from the environment.
"""

from __future__ import annotations

import os
from pathlib import Path


def wandb_offline(mode: str) -> bool:
    if mode == "online":
        return False
    if mode == "offline" or os.environ.get("WANDB_MODE") in ("offline", "dryrun"):
        return True
    return not (os.environ.get("WANDB_API_KEY") or "api.wandb.ai" in _netrc_text())


def _netrc_text() -> str:
    try:
        return (Path.home() / ".netrc").read_text()
    except OSError:
        return ""
