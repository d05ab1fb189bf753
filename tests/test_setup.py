"""The README's set-up (`make install`, which `make demo` and `make test` run first) stays inside the clone.

Before, `make install` ran `python3 -m pip install -e .` into whatever `python3` came first on PATH: a
temporary clone that ran `make demo` replaced the machine's `cifar-hpc`, and deleting the clone broke it
(`ModuleNotFoundError: No module named 'cifar_hpc'`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _where_python_finds_cifar_hpc(python: str | Path) -> str:
    """From a neutral folder: `python -c` puts the working directory first on sys.path."""
    done = subprocess.run(
        [str(python), "-c", "import cifar_hpc; print(cifar_hpc.__file__)"], capture_output=True, text=True, cwd="/"
    )
    return done.stdout.strip() if done.returncode == 0 else f"not importable: {done.stderr.strip()[-200:]}"


@pytest.mark.slow
def test_make_install_installs_into_the_clones_venv_and_leaves_the_machines_python_alone(tmp_path):
    """A copy of the project (what a fresh clone holds) runs `make install`: its `.venv` gets an editable
    `cifar-hpc` of that copy, this Python's `cifar_hpc` is still the one it was, also once the copy is
    deleted. The venv is made here first (the Makefile reuses one it finds) with this Python's packages
    on its path, so that the test installs cifar-hpc without downloading torch again."""
    clone = tmp_path / "clone"
    local = {".git", "runs", "data", "cifar_hpc.egg-info"}  # what a clone does not hold (at its root)

    def not_in_a_clone(folder: str, names: list[str]) -> set[str]:
        at_root = Path(folder) == ROOT
        return {n for n in names if n == "__pycache__" or at_root and (n in local or n.startswith(".venv"))}

    shutil.copytree(ROOT, clone, ignore=not_in_a_clone)
    venv = clone / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "reuse-the-tests-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([venv / "bin" / "python", "-c", "import pip"], check=True)  # pip through the .pth
    before = _where_python_finds_cifar_hpc(sys.executable)

    done = subprocess.run(["make", "-C", clone, "install"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    assert _where_python_finds_cifar_hpc(venv / "bin" / "python") == str(clone / "cifar_hpc" / "__init__.py")
    assert (venv / "bin" / "cifar-hpc").exists() and (venv / ".installed").exists()
    assert _where_python_finds_cifar_hpc(sys.executable) == before
    again = subprocess.run(["make", "-C", clone, "install"], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "pip install" not in again.stdout  # reused: nothing to reinstall
    shutil.rmtree(clone)
    assert _where_python_finds_cifar_hpc(sys.executable) == before
