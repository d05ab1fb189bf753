"""``torch.compile`` that pays off: the network compiled once per shape, its cache shared by a study.

**The network, not the LightningModule.** A compiled LightningModule makes Lightning compile
``training_step`` and co.; dynamo then guards on Python values that change every step
(``global_step``, torchmetrics' ``_update_count``, ``self.log``'s names) and recompiles each step up
to its limit (16 "Recompiling function" lines and 2 img/s on a CPU run). ``compile_network`` compiles
the ResNet in place (``nn.Module.compile``: its state_dict keys stay those of the eager model), so the
graphs are one for training, one for evaluation (BatchNorm's mode, no grad) and, at most once, one
with a dynamic batch for a smaller last evaluation batch.

**Once per study, not per run and node.** Inductor's and Triton's caches default to node-local
``/tmp``: every run of a study on a fresh node paid the cold compile (49.7 s of a 103 s run on an
H200). ``share_compile_cache`` points them at a folder beside the run's own, on the study's
filesystem, so the study's later runs, on any node, load the compiled kernels (Inductor's FX graph
cache and AOTAutograd's cache, both on by default, read it). The folder is keyed by what must match
for a compiled kernel to be reused: torch's version (and CUDA's), and the GPU model.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

CACHE_DIR = ".compile-cache"
"""Beside the study's run folders (``runs/<grid>/.compile-cache/<key>/``)."""


def _users_cache() -> str | None:
    """The Inductor cache folder the user chose, if any: Inductor sets the variable to its node-local
    default itself when it first looks (importing Lightning does), so that one is not a choice."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    return chosen if chosen and chosen != default_cache_dir() else None


def cache_key(device: torch.device) -> str:
    """What a compiled kernel depends on: torch's and CUDA's versions and the GPU model (else the CPU)."""
    parts = [f"torch{torch.__version__}"]
    if device.type == "cuda":
        parts += [f"cuda{torch.version.cuda}", torch.cuda.get_device_name(device)]
    else:
        parts.append(device.type)
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", "-".join(parts))


def share_compile_cache(run_dir: Path, device: torch.device) -> Path:
    """Point Inductor's and Triton's caches at ``<run_dir>/../.compile-cache/<key>/`` (unless the user
    chose a folder) and return that folder. Call before the first compile; every process of a study does."""
    users = _users_cache()
    folder = Path(users).parent if users else Path(run_dir).resolve().parent / CACHE_DIR / cache_key(device)
    if not users:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder / "inductor")
        os.environ.setdefault("TRITON_CACHE_DIR", str(folder / "triton"))
    Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]).mkdir(parents=True, exist_ok=True)
    return folder


def compile_network(model: nn.Module, mode: str, *, gpu: bool) -> nn.Module:
    """Compile ``model`` in place with ``mode`` (``default``, ``reduce-overhead``, ``max-autotune``);
    ``reduce-overhead`` (CUDA graphs) only on a GPU (``gpu``: where it will train), else the default."""
    model.compile(mode=None if mode == "default" or (mode == "reduce-overhead" and not gpu) else mode)
    return model
