"""Reading the job's GPUs through NVML on one node, a sampler thread writing JSON lines, and reading them back.

No Lightning here: ``telemetry.GpuTelemetry`` (the callback that runs the sampler during a fit) is
built on it, and ``collect``'s table and GPU plot read the files back with ``read_samples`` and
``summarize`` without paying for Lightning. One ``Sampler`` per node appends one JSON object per GPU
per tick to::

    <out_dir>/gpu.node<NODE_RANK>.jsonl     e.g. gpu.node0.jsonl, gpu.node1.jsonl

One file per node on purpose: the run folder usually sits on NFS/Lustre, where appends from several
hosts to one file can interleave or lose bytes; a file per node has exactly one writer. Each tick is
written and flushed at once, so a job killed by Slurm keeps everything it sampled; a requeued run
appends to the same files (rows carry ``t``, so the gap is visible). ``summarize(out_dir)`` reads
all nodes' files back into a few numbers for the results table.

Which GPUs: NVML numbers devices physically and ignores ``CUDA_VISIBLE_DEVICES``, so
``job_gpu_indices`` maps that variable to NVML indices (integers as they are, ``GPU-…``/``MIG-…``
UUIDs, or unambiguous prefixes of them, through NVML). Integers are taken as NVML indices. That
holds when Slurm does not confine devices (it then exports physical indices) and, we expect (not yet
checked on a cluster: compare ``nvidia-smi -L`` with the file), under its device cgroup
(``ConstrainDevices``), where CUDA and NVML both number only the job's GPUs, from 0, in PCI order.
CUDA's default FASTEST_FIRST order differs from PCI order only on nodes with mixed GPU models (set
``CUDA_DEVICE_ORDER=PCI_BUS_ID`` there). A MIG slice is reported as its parent GPU:
NVML has no utilisation for MIG devices, so the numbers then include other tenants of that GPU.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pynvml

log = logging.getLogger(__name__)

FILE_GLOB = "gpu.node*.jsonl"
_MIB = 1024 * 1024


def node_file(out_dir: str | os.PathLike[str], node_rank: int) -> Path:
    """The one file the sampler of node ``node_rank`` appends to (one writer per file)."""
    return Path(out_dir) / f"gpu.node{node_rank}.jsonl"


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One reading of one GPU; ``None`` where the GPU does not support that counter."""

    t: float
    """Unix time of the reading, seconds."""
    host: str
    """Node name (``SLURMD_NODENAME`` when set, else the hostname)."""
    node_rank: int
    """Lightning node rank of the process that sampled."""
    gpu: int
    """NVML (physical) device index on this host; not the CUDA ordinal inside the job."""
    util_pct: float | None
    """Percent of the last sample period in which a kernel ran (NVML's coarse "GPU utilisation")."""
    mem_used_mib: float | None
    mem_total_mib: float | None
    power_w: float | None
    """Board power draw, watts."""
    temp_c: float | None
    """GPU core temperature, degrees Celsius."""
    sm_clock_mhz: float | None
    """Current SM clock, MHz (drops under power or thermal throttling)."""


class NvmlUnavailable(RuntimeError):
    """NVML could not be initialised: no NVIDIA driver/library on this machine, or no usable GPU."""


class GpuReader(Protocol):
    """What ``Sampler`` needs from a reader: ``NvmlReader``, or a fake one in tests."""

    def read(self) -> list[GpuSample]: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# Which GPUs belong to this job


def parse_cuda_visible_devices(value: str | None) -> list[int | str] | None:
    """Parse ``CUDA_VISIBLE_DEVICES`` like the CUDA runtime does; pure.

    ``None`` (unset) -> ``None``: every GPU is visible. Otherwise a list of device ordinals (ints)
    and UUIDs/UUID prefixes (``"GPU-…"``, ``"MIG-…"``, str), in order. As in CUDA, the list ends at
    the first invalid entry (a negative number, garbage, or a repeat), so ``""``, ``"-1"`` and
    Slurm's ``"NoDevFiles"`` mean no GPU at all.
    """
    if value is None:
        return None
    out: list[int | str] = []
    for token in (part.strip() for part in value.split(",")):
        if token.startswith(("GPU-", "MIG-")) and len(token) > 4:
            entry: int | str = token
        else:
            try:
                entry = int(token)
            except ValueError:
                break
            if entry < 0:
                break
        if entry in out:
            break
        out.append(entry)
    return out


def job_gpu_indices(
    env: Mapping[str, str] = os.environ,
    resolve_uuid: Callable[[str], int] | None = None,
) -> list[int] | None:
    """NVML indices of the GPUs this job may use on this node, or ``None`` for all of them.

    UUID entries are resolved with ``resolve_uuid`` (default: through NVML, which must already be
    initialised; ``NvmlReader`` does this at start).
    """
    entries = parse_cuda_visible_devices(env.get("CUDA_VISIBLE_DEVICES"))
    if entries is None:
        return None
    resolve = resolve_uuid or _nvml_index_of_uuid
    indices: list[int] = []
    for entry in entries:
        index = entry if isinstance(entry, int) else resolve(entry)
        if index not in indices:  # two MIG slices of one GPU -> that GPU once
            indices.append(index)
    return indices


def _nvml_index_of_uuid(uuid: str) -> int:
    """NVML index of the (parent) GPU whose UUID is, or starts with, ``uuid``."""
    try:
        handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
    except pynvml.NVMLError:
        # CUDA accepts unambiguous prefixes (and the old "MIG-GPU-<uuid>/gi/ci" form); NVML does not.
        gpu_uuid = uuid.removeprefix("MIG-").split("/")[0] if uuid.startswith("MIG-GPU-") else uuid
        matches = [
            i
            for i in range(pynvml.nvmlDeviceGetCount())
            if _as_str(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i))).startswith(gpu_uuid)
        ]
        if len(matches) != 1:
            raise ValueError(f"CUDA_VISIBLE_DEVICES entry {uuid!r} matches {len(matches)} GPUs") from None
        return matches[0]
    if _is_mig(handle):
        handle = pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
    return int(pynvml.nvmlDeviceGetIndex(handle))


def _is_mig(handle: Any) -> bool:
    try:
        return bool(pynvml.nvmlDeviceIsMigDeviceHandle(handle))
    except pynvml.NVMLError:
        return False


def _as_str(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def host_name() -> str:
    """Slurm's node name when under Slurm (simulated nodes share one hostname), else the hostname."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


# ---------------------------------------------------------------------------------------------
# Reading NVML


def _field(read: Callable[..., float], *args: Any) -> float | None:
    """One counter, ``read(*args)``; ``None`` where this GPU lacks it (NVML raises NOT_SUPPORTED etc.)."""
    try:
        return float(read(*args))
    except pynvml.NVMLError:
        return None


class NvmlReader:
    """Reads the job's GPUs on this host through NVML. Raises ``NvmlUnavailable`` when it cannot."""

    def __init__(self, node_rank: int = 0, env: Mapping[str, str] | None = None) -> None:
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as e:  # LibraryNotFound, DriverNotLoaded, NoPermission, ...
            raise NvmlUnavailable(f"NVML init failed: {e}") from e
        try:
            indices = job_gpu_indices(os.environ if env is None else env)
            if indices is None:
                indices = list(range(pynvml.nvmlDeviceGetCount()))
            self._handles = [(i, pynvml.nvmlDeviceGetHandleByIndex(i)) for i in indices]
        except (pynvml.NVMLError, ValueError) as e:
            pynvml.nvmlShutdown()
            raise NvmlUnavailable(f"cannot open the job's GPUs through NVML: {e}") from e
        self.node_rank = node_rank
        self.host = host_name()
        self._closed = False

    @property
    def gpu_indices(self) -> list[int]:
        return [i for i, _ in self._handles]

    def read(self) -> list[GpuSample]:
        t = time.time()
        samples = []
        for index, h in self._handles:
            try:
                mem = pynvml.nvmlDeviceGetMemoryInfo(h)
                mem_used, mem_total = mem.used / _MIB, mem.total / _MIB
            except pynvml.NVMLError:
                mem_used = mem_total = None
            samples.append(
                GpuSample(
                    t=t,
                    host=self.host,
                    node_rank=self.node_rank,
                    gpu=index,
                    util_pct=_field(lambda h: pynvml.nvmlDeviceGetUtilizationRates(h).gpu, h),
                    mem_used_mib=mem_used,
                    mem_total_mib=mem_total,
                    power_w=_field(lambda h: pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0, h),  # mW -> W
                    temp_c=_field(pynvml.nvmlDeviceGetTemperature, h, pynvml.NVML_TEMPERATURE_GPU),
                    sm_clock_mhz=_field(pynvml.nvmlDeviceGetClockInfo, h, pynvml.NVML_CLOCK_SM),
                )
            )
        return samples

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError:
                pass


# ---------------------------------------------------------------------------------------------
# The sampler thread


class Sampler:
    """Daemon thread: ``reader.read()`` every ``interval_s``, append JSON lines to ``path``, flush."""

    MAX_CONSECUTIVE_ERRORS = 10

    def __init__(self, reader: GpuReader, path: Path, interval_s: float) -> None:
        self.reader = reader
        self.path = path
        self.interval_s = interval_s
        self.latest: dict[int, GpuSample] = {}  # gpu index -> newest sample; replaced whole, so no lock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="gpu-telemetry", daemon=True)
        self._file: Any = None

    def start(self) -> list[GpuSample]:
        """Open the file (appending), take the first sample here so errors surface now, start."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab+")  # noqa: SIM115 (closed in stop); bytes: exact seek below
        end = self._file.seek(0, os.SEEK_END)
        if end > 0:  # a killed run may have left half a line: end it, or the next row is lost too
            self._file.seek(end - 1)
            if self._file.read(1) != b"\n":
                self._file.write(b"\n")
        first = self._sample()
        self._thread.start()
        return first

    def _sample(self) -> list[GpuSample]:
        samples = self.reader.read()
        self._file.write("".join(json.dumps(dataclasses.asdict(s)) + "\n" for s in samples).encode())
        self._file.flush()
        self.latest = {**self.latest, **{s.gpu: s for s in samples}}
        return samples

    def _loop(self) -> None:
        errors = 0
        next_t = time.monotonic() + self.interval_s
        while not self._stop.wait(max(0.0, next_t - time.monotonic())):
            next_t = max(next_t + self.interval_s, time.monotonic())  # no catch-up bursts after a stall
            try:
                self._sample()
                errors = 0
            except Exception as e:  # noqa: BLE001 (a telemetry hiccup must not end telemetry or training)
                errors += 1
                if errors == 1:
                    log.warning("GPU telemetry: reading failed (%s: %s); retrying", type(e).__name__, e)
                if errors >= self.MAX_CONSECUTIVE_ERRORS:
                    log.warning("GPU telemetry: %d reads failed in a row; stopping the sampler", errors)
                    return

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout_s: float) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        if self._thread.is_alive():  # stuck in a driver call: leave reader and file to the daemon
            log.warning("GPU telemetry: sampler thread did not stop within %.1f s", timeout_s)
            return
        self.reader.close()
        if self._file is not None:
            self._file.close()


# ---------------------------------------------------------------------------------------------
# Reading it back


def read_samples(out_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every well-formed row of every ``gpu.node*.jsonl`` in ``out_dir``; garbage lines skipped."""
    rows = []
    for path in sorted(Path(out_dir).glob(FILE_GLOB)):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:  # a truncated last line of a killed job, or garbage
                    continue
                if isinstance(row, dict) and "gpu" in row and "host" in row:
                    rows.append(row)
    return rows


def _numbers(rows: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [float(v) for r in rows if isinstance(v := r.get(key), (int, float)) and not isinstance(v, bool)]


def summarize(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Utilisation mean/p95, peak memory, mean power over all samples of all GPUs and nodes.

    Every sample counts once (a GPU sampled longer weighs more). Fields with no data are ``None``.
    """
    rows = read_samples(out_dir)
    util = _numbers(rows, "util_pct")
    mem = _numbers(rows, "mem_used_mib")
    power = _numbers(rows, "power_w")
    return {
        "gpu_util_mean": float(np.mean(util)) if util else None,
        "gpu_util_p95": float(np.percentile(util, 95)) if util else None,
        "gpu_mem_peak_mib": max(mem) if mem else None,
        "gpu_power_mean_w": float(np.mean(power)) if power else None,
        "gpu_samples": len(rows),
        "gpu_count": len({(r["host"], r["gpu"]) for r in rows}),
    }
