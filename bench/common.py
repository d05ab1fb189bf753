"""What every benchmark records next to its figures: machine, versions, commit, date."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def environment() -> dict:
    import lightning
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip() or None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "machine": {"host": platform.node(), "cpu": _cpu_model(), "cpus": os.cpu_count(), "gpu": gpu},
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "lightning": lightning.__version__},
        "commit": commit,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def record(name: str, figures: dict, *, tiny: bool) -> Path | None:
    """Write bench/results/NAME.json (not in tiny mode: CI runs benchmarks only so they cannot rot)."""
    payload = {"benchmark": name, **environment(), "figures": figures}
    print(json.dumps(payload, indent=2))
    if tiny:
        return None
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
