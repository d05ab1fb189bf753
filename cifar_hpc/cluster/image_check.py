"""What a profile's container image holds, asked of the image itself: its Python, cifar-hpc and code.

``cifar-hpc submit`` pickles each task on this side and submitit unpickles it INSIDE the container:
an image with another cifar-hpc or another Python minor version fails every task of the array, after
it waited in the queue. So ``doctor`` (and ``submit``, before anything is submitted) runs ``PROBE``,
a tiny Python program, in the container through the very command the jobs use
(``containers.container_command``, after the profile's setup lines, e.g. ``module load apptainer``),
with a timeout, and ``compare`` says what does not match, one line each.

The image's code is frozen when it is built: a checkout edited since then still has the same
version, so the source ids are compared too (``cifar_hpc.base.code_identity``); a difference is a
warning (the runs train the image's code), not a refusal.

pyxis runs images through ``srun`` only: it is not probed here.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cifar_hpc
from cifar_hpc.base import code_identity
from cifar_hpc.base.errors import UserError
from cifar_hpc.cluster.containers import ContainerSpec, container_command

PROBE_TIMEOUT_S = 120
"""A first start of a .sif on a busy shared filesystem, or of a docker image, takes tens of seconds."""
MARKER = "CIFAR_HPC_PROBE "

# Runs in the image's python3, whatever cifar-hpc it holds (an old one may lack code_identity).
PROBE = f"""
import json, platform
facts = {{"python": platform.python_version()}}
try:
    import cifar_hpc
    facts["cifar_hpc"] = cifar_hpc.__version__
except Exception as error:
    facts["error"] = f"import cifar_hpc: {{type(error).__name__}}: {{error}}"
else:
    try:
        from cifar_hpc.base.code_identity import source_id
        facts["code"] = source_id()
    except Exception:
        pass
try:
    import submitit
    facts["submitit"] = submitit.__version__
except Exception:
    pass
print({MARKER!r} + json.dumps(facts), flush=True)
"""

PROBED_RUNTIMES = ("apptainer", "docker", "podman")
BINARIES = {"apptainer": "apptainer", "docker": "docker", "podman": "podman", "pyxis": "srun"}


@dataclass(frozen=True)
class Finding:
    status: str  # ok | warn | fail
    detail: str


def here() -> dict[str, Any]:
    """The submitting side's facts, in the probe's terms."""
    return {
        "python": platform.python_version(),
        "cifar_hpc": cifar_hpc.__version__,
        "code": code_identity.source_id(),
    }


def shell_script(setup: Sequence[str], words: Sequence[str]) -> str:
    """The profile's setup lines, then ``words`` as one command (what a job's script does)."""
    return "\n".join([*setup, shlex.join(words)])


def find_runtime(runtime: str, setup: Sequence[str] = (), timeout_s: float = 60) -> str | None:
    """Where the runtime's command is once the setup lines ran (``module load apptainer``), or None."""
    script = "\n".join([*setup, f"command -v {BINARIES[runtime]}"])
    try:
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None
    lines = done.stdout.split()
    return lines[-1] if done.returncode == 0 and lines else None


def probe(spec: ContainerSpec, setup: Sequence[str] = (), timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    """``PROBE``'s facts from inside ``spec``'s image; ``{"error": ...}`` when it gave none in time."""
    words = (*container_command(spec, "python3").words, "-c", PROBE)
    try:
        done = subprocess.run(
            ["bash", "-c", shell_script(setup, words)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"no answer within {timeout_s:.0f} s"}
    for line in done.stdout.splitlines():
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER) :])
    said = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
    return {"error": f"exit {done.returncode}: {said}"}


def compare(inside: Mapping[str, Any], this_side: Mapping[str, Any], image: str) -> list[Finding]:
    """What differs between the image and this side, worst first; one ``ok`` finding when nothing does."""
    if "error" in inside:
        if "python" in inside:  # Python ran, cifar_hpc did not import
            return [Finding("fail", f"{image} has Python {inside['python']} but no cifar-hpc ({inside['error']})")]
        return [Finding("fail", f"could not run python3 in {image}: {inside['error']}")]
    found = []
    py_in, py_here = str(inside["python"]), str(this_side["python"])
    if py_in.split(".")[:2] != py_here.split(".")[:2]:
        found.append(
            Finding(
                "fail",
                f"{image} has Python {py_in}, this side {py_here}: submitit unpickles every task inside the "
                "image and needs the same Python minor version (submit from a matching Python, or rebuild)",
            )
        )
    if inside.get("cifar_hpc") != this_side["cifar_hpc"]:
        found.append(
            Finding(
                "fail",
                f"{image} has cifar-hpc {inside.get('cifar_hpc')}, this side {this_side['cifar_hpc']}: every task "
                "is unpickled by the image's cifar-hpc; rebuild the image (containers/README.md)",
            )
        )
    if not inside.get("submitit"):
        found.append(Finding("fail", f"{image} has no submitit: cifar-hpc submit's tasks cannot start in it"))
    if found:
        return found
    code_in = inside.get("code")
    summary = f"Python {py_in}, cifar-hpc {inside['cifar_hpc']} (source {code_in or 'unknown'})"
    if code_in and code_in != this_side.get("code"):
        return [
            Finding(
                "warn",
                f"{image} holds cifar-hpc source {code_in}, this checkout {this_side.get('code')}: runs train the "
                "image's code; rebuild its code layer to train your changes (containers/README.md)",
            )
        ]
    return [Finding("ok", f"{image}: {summary} inside, as on this side")]


def image_findings(
    runtime: str, image: str, setup: Sequence[str] = (), workdir: str | None = None, binds: Sequence[str] = ()
) -> list[Finding]:
    """The runtime found after the setup lines, the image readable, apptainer's binds there (a missing
    one stops every task: "mount source doesn't exist"), then ``compare`` of the probe."""
    if runtime not in PROBED_RUNTIMES:
        return [Finding("ok", f"{runtime} with {image}: not probed here (pyxis starts images through srun only)")]
    where = find_runtime(runtime, setup)
    if where is None:
        how = " after the profile's setup lines" if setup else " (add e.g. `module load apptainer` to setup)"
        return [Finding("fail", f"{BINARIES[runtime]} not found on this node's PATH{how}")]
    missing = image_missing(runtime, image)
    if missing:
        return [Finding("fail", missing)]
    here_dir = workdir or os.getcwd()
    absent = [b for b in binds if runtime == "apptainer" and not os.path.isdir(os.path.join(here_dir, b))]
    noted = [
        Finding("warn", f"bind {b} is no folder on this node: apptainer does not start where it is missing")
        for b in absent
    ]
    try:
        spec = ContainerSpec(runtime=runtime, image=image, workdir=here_dir, gpus="none")  # type: ignore[arg-type]
    except UserError as error:
        return [Finding("fail", str(error))]
    return [*noted, *compare(probe(spec, setup), here(), image)]


def image_missing(runtime: str, image: str, timeout_s: float = 60) -> str | None:
    """Why the image cannot be used as named (missing, unreadable, unknown to docker/podman), or None.
    Apptainer's ``docker://`` and other URIs are pulled when a task starts: not checked."""
    if runtime == "apptainer":
        if "://" in image:
            return None
        if not os.path.exists(image):
            return f"image {image} does not exist"
        if not os.access(image, os.R_OK) or (os.path.isdir(image) and not os.access(image, os.X_OK)):
            return f"image {image} is not readable by this user"
        return None
    try:
        found = subprocess.run([runtime, "image", "inspect", image], capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"`{runtime} image inspect` gave no answer within {timeout_s:.0f} s"
    if found.returncode != 0:
        return f"{runtime} has no image {image} (build it: containers/README.md)"
    return None


def image_problems(runtime: str, image: str, setup: Sequence[str] = (), workdir: str | None = None) -> list[str]:
    """What would fail every task, for ``submit`` to stop on: an image that is missing or holds another
    Python or cifar-hpc. Nothing when the runtime is not on this node (a login node without apptainer:
    the tasks may still find it; ``doctor`` says it could not look)."""
    if runtime not in PROBED_RUNTIMES or find_runtime(runtime, setup) is None:
        return []
    return [f.detail for f in image_findings(runtime, image, setup, workdir) if f.status == "fail"]
