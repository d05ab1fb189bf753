"""Shared fixtures: generated CIFAR-format data, W&B offline, and the CLI run in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from cifar_hpc.data import cifar_files, layout

pytest_plugins = ["slurm_cluster", "container_images"]


@pytest.fixture(autouse=True)
def _wandb_offline(monkeypatch, tmp_path):
    """Every test: W&B offline, no key, nothing written outside tmp."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / ".wandb-cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / ".wandb-config"))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """40 training images (8 per batch file) and 20 test images: enough to exercise the machinery."""
    root = tmp_path_factory.mktemp("tiny")
    cifar_files.write_synthetic(root, train_per_batch=8, test=20, seed=1)
    return root


@pytest.fixture(scope="session")
def learn_data(tmp_path_factory) -> Path:
    """300 training images and 200 test images: enough for a ResNet to show it learns."""
    root = tmp_path_factory.mktemp("learn")
    cifar_files.write_synthetic(root, train_per_batch=60, test=200, seed=2)
    return root


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(args: list[str], capsys) -> CliResult:
    """The real entry point (`cifar_hpc.cli.main`), in this process: exit code, stdout, stderr."""
    from cifar_hpc.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def run_console_script(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """The installed `cifar-hpc` command in a subprocess, as a user types it."""
    return subprocess.run(
        [sys.executable, "-m", "cifar_hpc", *map(str, args)], capture_output=True, text=True, **kwargs
    )


GOLDEN = Path(__file__).parent / "golden"


def assert_golden(name: str, text: str) -> None:
    """Compare with tests/golden/NAME; UPDATE_GOLDEN=1 rewrites it (review the diff)."""
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; rerun with UPDATE_GOLDEN=1 if intended"


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


# --- a tiny study on generated data, for the submit/doctor/container tests ----------------------

TINY_BASE = """
[base]
epochs = {epochs}
batch_size = 12
data = {{ dir = "{data}", num_workers = 0, stage = true }}
augment = {{ crop = false, flip = false, rotate = false }}
wandb = {{ mode = "offline" }}

[axes]
model = ["resnet18"]
seed = {seeds}
"""


def write_grid(folder: Path, name: str, cells: str, *, epochs: int = 1, seeds: str = "[0]") -> Path:
    data_dir = folder / "data"
    if not (data_dir / layout.BATCH_DIR).exists():
        cifar_files.write_synthetic(data_dir, train_per_batch=8, test=20, seed=1)
    path = folder / f"{name}.toml"
    path.write_text(TINY_BASE.format(epochs=epochs, data=data_dir, seeds=seeds) + cells)
    return path


def results(folder: Path) -> dict[str, dict]:
    return {p.parent.name: read_json(p) for p in folder.glob("*/result.json")}
