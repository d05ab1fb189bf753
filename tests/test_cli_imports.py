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
    _assert_imports_none(["status", str(study), "--runs"], ("torch", "lightning", "pandas", "scipy"))
    run_id = sorted(p.name for p in study.iterdir() if p.is_dir())[0]
    _assert_imports_none(["logs", run_id, "--results-dir", str(study)], ("torch", "lightning", "pandas", "scipy"))
    _assert_imports_none(["grid", "show", "ablation", "--results-dir", str(study.parent)], BANNED)  # with states
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


def test_the_entry_point_can_be_called_again_without_growing(capsys) -> None:
    """Notebooks, tools and this test suite call ``main`` many times in one process: each call must
    cost the same. (It once registered every command again per call: 0.1 s more each time, and
    a 25-minute test suite took 35.)"""
    import logging

    from cifar_hpc.cli import app, main

    def size() -> tuple[int, int, int, int]:
        lightning = logging.getLogger("lightning.pytorch.utilities.rank_zero")
        return (
            len(app.registered_commands),
            len(app.registered_groups),
            len(lightning.filters),
            len(logging.getLogger().handlers),
        )

    for _ in range(2):
        with pytest.raises(SystemExit):
            main(["grid", "--help"])
    before = size()
    for _ in range(3):
        with pytest.raises(SystemExit):
            main(["grid", "--help"])
    assert size() == before
    assert before[0] == len({c.name for c in app.registered_commands})  # each command once
