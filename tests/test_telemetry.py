"""GPU telemetry: CUDA_VISIBLE_DEVICES parsing, summaries (gpu_monitor), and the callback in a real (CPU) fit.

This machine has no GPU, so the callback is driven by ``FakeNvmlReaderNoGpuHere``, which invents
readings for GPUs that do not exist; the real ``NvmlReader`` is only checked to refuse cleanly.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path
from typing import ClassVar

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cifar_hpc.training.gpu_monitor import (
    GpuSample,
    NvmlReader,
    NvmlUnavailable,
    Sampler,
    job_gpu_indices,
    parse_cuda_visible_devices,
    read_samples,
    summarize,
)
from cifar_hpc.training.telemetry import GpuTelemetry

UUID_A = "GPU-8932f937-d72c-4106-c12f-20bd9faed9f6"
UUID_B = "GPU-ba3c0b46-1b9d-c4c1-9a7e-7a1b2d6f0e11"

# --- CUDA_VISIBLE_DEVICES ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", []),
        ("0", [0]),
        ("2,3", [2, 3]),
        (" 1 , 0 ", [1, 0]),
        ("0,-1,2", [0]),  # CUDA stops at the first invalid entry
        ("NoDevFiles", []),  # what Slurm sets without a GPU allocation
        ("1,1", [1]),
        (f"{UUID_A},{UUID_B}", [UUID_A, UUID_B]),
        ("MIG-4b1c2e2d-5b7a-5ad0-9c87-7e1a0f0e2b3c", ["MIG-4b1c2e2d-5b7a-5ad0-9c87-7e1a0f0e2b3c"]),
        ("0,GPU-8932,x,3", [0, "GPU-8932"]),
    ],
)
def test_parse_cuda_visible_devices(value, expected):
    assert parse_cuda_visible_devices(value) == expected


def test_job_gpu_indices_maps_uuids_through_resolver():
    nvml = {UUID_A: 5, UUID_B: 2, "MIG-aaaa": 2}  # two MIG slices/entries of one GPU -> once
    assert job_gpu_indices({}) is None
    assert job_gpu_indices({"CUDA_VISIBLE_DEVICES": "3,1"}) == [3, 1]
    env = {"CUDA_VISIBLE_DEVICES": f"{UUID_A},{UUID_B},MIG-aaaa"}
    assert job_gpu_indices(env, resolve_uuid=nvml.__getitem__) == [5, 2]


# --- summarize -----------------------------------------------------------------------------------


def _row(host, node_rank, gpu, util, mem=1000.0, power=300.0, t=0.0):
    return json.dumps(
        {
            "t": t,
            "host": host,
            "node_rank": node_rank,
            "gpu": gpu,
            "util_pct": util,
            "mem_used_mib": mem,
            "mem_total_mib": 81559.0,
            "power_w": power,
            "temp_c": 50.0,
            "sm_clock_mhz": 1980.0,
        }
    )


def test_summarize_two_nodes_with_truncated_and_garbage_lines(tmp_path):
    node0 = [_row("n1", 0, 0, 90, mem=5000), _row("n1", 0, 1, 80), "not json at all", "[1, 2]"]
    (tmp_path / "gpu.node0.jsonl").write_text("\n".join(node0) + "\n" + _row("n1", 0, 0, 1)[:40])
    node1 = [_row("n2", 1, 0, 70, power=None), _row("n2", 1, 0, None, mem=7000.5), ""]
    (tmp_path / "gpu.node1.jsonl").write_text("\n".join(node1))
    (tmp_path / "other.jsonl").write_text(_row("x", 9, 9, 0))  # not a telemetry file

    s = summarize(tmp_path)
    assert s["gpu_samples"] == 4
    assert s["gpu_count"] == 3  # (n1,0) (n1,1) (n2,0)
    assert s["gpu_util_mean"] == pytest.approx(80.0)
    assert s["gpu_util_p95"] == pytest.approx(89.0)  # numpy linear interpolation of [70, 80, 90]
    assert s["gpu_mem_peak_mib"] == 7000.5
    assert s["gpu_power_mean_w"] == pytest.approx(300.0)


def test_summarize_empty(tmp_path):
    (tmp_path / "gpu.node0.jsonl").write_text('{"t": 1, "trunc')
    assert summarize(tmp_path) == {
        "gpu_util_mean": None,
        "gpu_util_p95": None,
        "gpu_mem_peak_mib": None,
        "gpu_power_mean_w": None,
        "gpu_samples": 0,
        "gpu_count": 0,
    }
    assert summarize(tmp_path / "missing")["gpu_samples"] == 0


# --- the reader ----------------------------------------------------------------------------------


def test_real_nvml_reader_refuses_without_a_driver():
    try:
        reader = NvmlReader()
    except NvmlUnavailable:
        return
    reader.close()
    pytest.skip("this machine has a working NVML driver")


class FakeNvmlReaderNoGpuHere:
    """Stands in for NVML on this GPU-less machine: invents readings for ``gpus`` fake GPUs."""

    instances: ClassVar[list[FakeNvmlReaderNoGpuHere]] = []

    def __init__(self, node_rank: int = 0, gpus: tuple[int, ...] = (0, 1)) -> None:
        self.node_rank, self.gpus = node_rank, gpus
        self.reads = 0
        self.closed = False
        FakeNvmlReaderNoGpuHere.instances.append(self)

    def read(self) -> list[GpuSample]:
        self.reads += 1
        return [
            GpuSample(
                t=time.time(),
                host="fake-host",
                node_rank=self.node_rank,
                gpu=g,
                util_pct=float(50 + g),
                mem_used_mib=1000.0 + self.reads,
                mem_total_mib=81559.0,
                power_w=None if g else 250.0,  # a counter "not supported" on GPU 1
                temp_c=40.0,
                sm_clock_mhz=1755.0,
            )
            for g in self.gpus
        ]

    def close(self) -> None:
        self.closed = True


def test_sampler_appends_after_a_truncated_line(tmp_path):
    path = tmp_path / "gpu.node0.jsonl"
    path.write_text(_row("old", 0, 0, 10) + "\n" + '{"t": 1.0, "host": "ol')  # killed mid-write
    sampler = Sampler(FakeNvmlReaderNoGpuHere(gpus=(0,)), path, interval_s=0.01)
    sampler.start()
    time.sleep(0.05)
    sampler.stop(timeout_s=2)
    assert not sampler.alive and sampler.reader.closed
    rows = read_samples(tmp_path)
    assert rows[0]["host"] == "old"
    assert len(rows) == 1 + sampler.reader.reads >= 3  # the first new row survived the broken one


# --- the callback in a real CPU fit ----------------------------------------------------------------


class TinyModule(pl.LightningModule):
    def __init__(self, fail_at_step: int | None = None) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        self.fail_at_step = fail_at_step

    def training_step(self, batch, batch_idx):
        if batch_idx == self.fail_at_step:
            raise RuntimeError("boom")
        time.sleep(0.004)  # give the 10 ms sampler a chance to tick
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path: Path, callback: GpuTelemetry, module: pl.LightningModule | None = None, version: str = "v") -> Path:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(240, 8), torch.randint(0, 2, (240,)))
    logger = CSVLogger(tmp_path / "logs", name="", version=version)
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=[callback],
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module or TinyModule(), DataLoader(data, batch_size=8))  # 30 steps
    return Path(logger.log_dir) / "metrics.csv"


def test_callback_writes_samples_and_logs_metrics(tmp_path):
    FakeNvmlReaderNoGpuHere.instances.clear()
    out = tmp_path / "run"
    callback = GpuTelemetry(out, interval_s=0.01, reader_factory=FakeNvmlReaderNoGpuHere)
    metrics_csv = _fit(tmp_path, callback)

    (reader,) = FakeNvmlReaderNoGpuHere.instances  # one per node, not one per hook
    assert reader.closed and callback._sampler is None
    assert [p.name for p in out.iterdir()] == ["gpu.node0.jsonl"]
    lines = (out / "gpu.node0.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]  # every line is well-formed JSON
    assert len(rows) == 2 * reader.reads >= 2 * 3
    assert {r["gpu"] for r in rows} == {0, 1}
    assert set(rows[0]) == {
        "t",
        "host",
        "node_rank",
        "gpu",
        "util_pct",
        "mem_used_mib",
        "mem_total_mib",
        "power_w",
        "temp_c",
        "sm_clock_mhz",
    }
    assert all(r["node_rank"] == 0 and r["util_pct"] == 50 + r["gpu"] for r in rows)
    assert summarize(out)["gpu_count"] == 2

    with open(metrics_csv) as f:
        logged = [r for r in csv.DictReader(f) if r.get("gpu/0/util_pct")]
    assert logged, "no GPU metrics reached the logger"
    assert float(logged[0]["gpu/1/util_pct"]) == 51.0
    assert float(logged[0]["gpu/0/power_w"]) == 250.0
    assert "gpu/1/power_w" not in logged[0] or logged[0]["gpu/1/power_w"] == ""  # None is not logged

    # a requeued run appends to the same file
    _fit(tmp_path, GpuTelemetry(out, interval_s=0.01, reader_factory=FakeNvmlReaderNoGpuHere), version="v2")
    assert len((out / "gpu.node0.jsonl").read_text().splitlines()) > len(lines)


def test_callback_stops_sampler_when_training_raises(tmp_path):
    FakeNvmlReaderNoGpuHere.instances.clear()
    callback = GpuTelemetry(tmp_path / "run", interval_s=0.01, reader_factory=FakeNvmlReaderNoGpuHere)
    with pytest.raises(RuntimeError, match="boom"):
        _fit(tmp_path, callback, TinyModule(fail_at_step=5))
    (reader,) = FakeNvmlReaderNoGpuHere.instances
    assert reader.closed and callback._sampler is None
    assert read_samples(tmp_path / "run")


def test_callback_without_nvml_trains_and_says_so_once(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # on CPU the line is DEBUG: expected there, not worth a line per run
    out = tmp_path / "run"
    callback = GpuTelemetry(out, interval_s=0.01)  # the real NvmlReader: no driver here
    metrics_csv = _fit(tmp_path, callback)
    assert metrics_csv.exists()  # training completed
    assert not out.exists() or not list(out.glob("gpu.node*.jsonl"))
    nvml_records = [r for r in caplog.records if "NVML" in r.getMessage()]
    assert len(nvml_records) == 1, [r.getMessage() for r in nvml_records]
    assert "no GPU telemetry recorded" in nvml_records[0].getMessage() and nvml_records[0].levelno == logging.DEBUG


class FakePynvmlNoGpuHere:
    """Patched over the real ``pynvml`` functions: 4 invented GPUs, GPU 2 lacks power and clocks."""

    uuids = (UUID_A, UUID_B, "GPU-33333333-0000-0000-0000-000000000000", "GPU-44444444-0000-0000-0000-000000000000")

    def __init__(self) -> None:
        self.shutdowns = 0

    def install(self, monkeypatch) -> None:
        import pynvml

        def not_supported_on_2(value):
            def read(h, *_):
                if h == 2:
                    raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
                return value

            return read

        def by_uuid(uuid):
            if uuid not in self.uuids:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
            return self.uuids.index(uuid)

        fakes = {
            "nvmlInit": lambda: None,
            "nvmlShutdown": lambda: setattr(self, "shutdowns", self.shutdowns + 1),
            "nvmlDeviceGetCount": lambda: len(self.uuids),
            "nvmlDeviceGetHandleByIndex": lambda i: i,  # a handle is just the index here
            "nvmlDeviceGetHandleByUUID": by_uuid,
            "nvmlDeviceGetUUID": lambda h: self.uuids[h],
            "nvmlDeviceGetIndex": lambda h: h,
            "nvmlDeviceIsMigDeviceHandle": lambda h: False,
            "nvmlDeviceGetUtilizationRates": lambda h: pynvml.c_nvmlUtilization_t(gpu=10 * h, memory=0),
            "nvmlDeviceGetMemoryInfo": lambda h: pynvml.c_nvmlMemory_t(total=80 * 2**30, free=0, used=3 * 2**30),
            "nvmlDeviceGetPowerUsage": not_supported_on_2(312_500),  # milliwatts
            "nvmlDeviceGetTemperature": lambda h, sensor: 41,
            "nvmlDeviceGetClockInfo": not_supported_on_2(1980),
        }
        for name, fn in fakes.items():
            monkeypatch.setattr(pynvml, name, fn)


def test_nvml_reader_code_against_fake_pynvml(monkeypatch):
    fake = FakePynvmlNoGpuHere()
    fake.install(monkeypatch)
    monkeypatch.setenv("SLURMD_NODENAME", "n7")

    reader = NvmlReader(node_rank=3, env={"CUDA_VISIBLE_DEVICES": "GPU-3333,2," + UUID_B})
    assert reader.gpu_indices == [2, 1]  # prefix and duplicate resolved, order kept
    s2, s1 = reader.read()
    assert (s1.host, s1.node_rank, s1.gpu) == ("n7", 3, 1)
    assert (s1.util_pct, s1.mem_used_mib, s1.mem_total_mib) == (10.0, 3072.0, 81920.0)
    assert (s1.power_w, s1.temp_c, s1.sm_clock_mhz) == (312.5, 41.0, 1980.0)
    assert (s2.power_w, s2.sm_clock_mhz, s2.util_pct) == (None, None, 20.0)  # unsupported -> None
    reader.close()
    reader.close()
    assert fake.shutdowns == 1

    assert NvmlReader(env={}).gpu_indices == [0, 1, 2, 3]  # unset: all GPUs
    with pytest.raises(NvmlUnavailable, match="matches 0 GPUs"):
        NvmlReader(env={"CUDA_VISIBLE_DEVICES": "GPU-ffff"})
