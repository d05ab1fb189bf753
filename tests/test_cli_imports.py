"""The fast commands stay fast: help and `grid show` import none of the heavy scientific stack;
`status` and `submit --dry-run` none of torch, Lightning, pandas and scipy (they may read data
files, so numpy is theirs to use).

A login node runs these often, and the heavy libraries add seconds on a shared filesystem. Each
case runs in a fresh interpreter, since this test process has long since imported all of them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_grid
from test_collect import make_study

BANNED = ("numpy", "pandas", "scipy", "torch", "lightning")
REPO = Path(__file__).resolve().parents[1]  # `grid show smoke` reads jobs/smoke.toml

PROBE = """
import sys
from cifar_hpc.cli import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print("EXIT:", code)
print("IMPORTED:" + ",".join(name for name in {banned!r} if name in sys.modules))
"""


@pytest.mark.parametrize("argv", [["--help"], ["grid", "show", "smoke"], ["data", "--help"]], ids=" ".join)
def test_fast_commands_import_no_heavy_module(argv: list[str]) -> None:
    _assert_imports_none(argv, BANNED)


def test_status_and_dry_run_import_no_torch_lightning_pandas_scipy(tmp_path: Path) -> None:
    study = make_study(tmp_path / "runs" / "ablation")
    _assert_imports_none(["status", str(study)], ("torch", "lightning", "pandas", "scipy"))
    grid = write_grid(tmp_path, "probe", '[[cells]]\nname = "baseline"\n')
    dry_run = [
        "submit",
        "--grid",
        str(grid),
        "--executor",
        "local",
        "--results-dir",
        str(tmp_path / "runs"),
        "--dry-run",
    ]
    _assert_imports_none(dry_run, ("torch", "lightning", "pandas", "scipy"))


def _assert_imports_none(argv: list[str], banned: tuple[str, ...]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(banned=banned), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("IMPORTED:")]
    assert lines, f"the probe did not finish:\n{result.stdout}\n{result.stderr}"
    assert "EXIT: 0" in result.stdout, f"`cifar-hpc {' '.join(argv)}` failed:\n{result.stdout}\n{result.stderr}"
    assert lines[-1] == "IMPORTED:", f"`cifar-hpc {' '.join(argv)}` imported {lines[-1].removeprefix('IMPORTED:')}"
