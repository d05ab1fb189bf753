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

    try:  # a copy of the tree without .git, or a machine without git (a GPU node's image), has no commit
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                cwd=Path(__file__).parent,
                timeout=10,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "machine": {"host": platform.node(), "cpu": _cpu_model(), "cpus": os.cpu_count(), "gpu": gpu},
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "lightning": lightning.__version__,
        },
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


def record(name: str, figures: dict, *, tiny: bool, path: str | Path | None = None, echo: bool = True) -> Path | None:
    """Write bench/results/NAME.json (not in tiny mode: CI runs benchmarks only so they cannot rot).

    ``path``: write there instead, also in tiny mode (asked for explicitly, e.g. by ``bench.gpu_check``,
    which calls this after every case so that a stage cut short still leaves what it finished)."""
    payload = {"benchmark": name, **environment(), "figures": figures}
    if echo:
        print(json.dumps(payload, indent=2))
    if path is None and tiny:
        return None
    path = Path(path) if path is not None else RESULTS / f"{name}.json"
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(json.dumps(payload, indent=2) + "\n")
    temp.replace(path)  # a reader (or a kill) never sees half a file
    return path


# --- helpers shared by the benchmarks (added with the performance suite) --------------------------


def loadavg() -> tuple[float, float, float]:
    """The 1-, 5- and 15-minute load averages (zeros where /proc is missing)."""
    try:
        return tuple(float(x) for x in Path("/proc/loadavg").read_text().split()[:3])  # type: ignore[return-value]
    except (OSError, ValueError):
        return (0.0, 0.0, 0.0)


def wait_for_quiet_cpu(
    *, threshold: float = 1.5, max_wait_s: float = 240.0, poll_s: float = 10.0, tiny: bool = False
) -> dict:
    """Before a full CPU measurement: wait (up to ``max_wait_s``) until the 1-min load is at most
    ``threshold``. Other work shares this machine's cores; the figures are ratios measured in one run
    anyway, but a quiet start makes them less noisy. Returns what was seen, to record with the figures."""
    import time

    start = time.monotonic()
    before = loadavg()[0]
    while not tiny and loadavg()[0] > threshold and time.monotonic() - start < max_wait_s:
        time.sleep(poll_s)
    now = loadavg()[0]
    return {
        "load1_before_wait": before,
        "load1_at_start": now,
        "waited_s": round(time.monotonic() - start, 1),
        "quiet": now <= threshold,
    }


def synchronize(device) -> None:
    """Wait for the device's queued work (a no-op on CPU): every timing window ends with this."""
    import torch

    if getattr(device, "type", device) == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_tflops(device, dtype, *, n: int = 8192, iters: int = 20) -> float:
    """Measured dense matmul throughput (TFLOP/s) of ``dtype`` on ``device``: the MFU denominator.

    An (n×n)·(n×n) product costs 2n³ FLOPs; best of three timed windows of ``iters`` products."""
    import time

    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(iters):
            a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 * iters / best / 1e12
