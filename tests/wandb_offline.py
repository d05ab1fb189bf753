"""Read back what W&B (0.31) wrote in offline mode, so tests can check it without a server.

Facts checked on real files written by wandb 0.31.0 (``wandb.init(mode="offline")`` and Lightning's
``WandbLogger(offline=True)``):

- Where: ``<dir>/wandb/offline-run-<YYYYmmdd_HHMMSS>-<id>/run-<id>.wandb``. ``WandbLogger(save_dir=D)``
  passes ``dir=D`` to ``wandb.init``, so it is ``D/wandb/...`` (not ``D`` itself). ``wandb/latest-run``
  is a symlink to the newest run dir (3.11's ``glob("**")`` follows it: we de-duplicate). A resumed
  run with the same id gets a *second* ``offline-run-<later time>-<id>`` dir; ``read_run`` merges
  all files of one id in time order.
- Bytes: a 7-byte file header ``b":W&B" + b"\\xe1\\xbe" + b"\\x00"`` (magic 0xBEE1 little-endian,
  version 0), then LevelDB-log records in 32 KiB blocks counted from byte 0 of the file (the file
  header sits inside the first block). Record header: crc32 (``<I``), length (``<H``), type (``B``:
  1 full, 2 first, 3 middle, 4 last); the crc is plain zlib/IEEE crc32 of the type byte followed by
  the payload (not LevelDB's masked crc32c). Fewer than 7 bytes left in a block are zero padding.
  Each reassembled payload is one ``wandb_internal_pb2.Record``.
- Config: one item per *top-level* key, its whole value as JSON in ``value_json``; a nested dict is
  NOT flattened (``model={"name": "r18"}`` -> key ``"model"``, value ``'{"name":"r18"}'``), so
  decoding gives back the dict as passed. Init config arrives inside the ``run`` record; later
  updates (``run.config.update``, ``WandbLogger.log_hyperparams``) as separate ``config`` records.
  An internal ``_wandb`` key is dropped here.
- History and summary use ``nested_key`` (a path list) even for flat keys; a logged nested dict
  ``{"a": {"b": 1}}`` becomes the path ``["a", "b"]``. We join paths with ``"."`` as W&B's web/API
  history does (``"a.b"``); ``"train/loss"`` stays one key. Rows also carry ``_step``, ``_runtime``
  and ``_timestamp``.
- ``WandbLogger.log_metrics(m, step=s)`` does NOT set W&B's step: it logs ``m`` plus
  ``"trainer/global_step": s``, and ``_step`` just counts calls (0, 1, 2, ...).
- ``run.finish()`` can return BEFORE the file is complete: wandb-core writes the log in 32 KiB
  blocks and the last, partial block lands a few ms later (seen here: 1 read in 3 ended exactly at
  byte 131072 without the last history rows and the ``exit`` record). ``wandb.teardown()`` (also
  run at interpreter exit) waits for the service to finish. ``read_run`` therefore waits up to
  ``wait_s`` for the ``exit`` record; a killed run never gets one, so pass ``wait_s=0`` for those.
- ``WandbLogger`` always passes ``anonymous=``, so wandb 0.31 prints "The anonymous setting has no
  effect" on stderr even with ``WANDB_SILENT=true``; harmless.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

BLOCK, HEADER = 32 * 1024, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: str | Path) -> list[pb.Record]:
    """Every record of one ``run-<id>.wandb`` file, in order. A truncated tail (live run) ends it."""
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B run file (header {data[:7]!r})")
    records, parts, pos = [], [], HEADER
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # block trailer: zero padding
            pos += BLOCK - pos % BLOCK
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        payload = data[pos + HEADER : pos + HEADER + length]
        if kind == 0 or len(payload) < length:  # zeroed or unfinished tail
            break
        if zlib.crc32(bytes([kind]) + payload) != crc:
            raise ValueError(f"{path}: bad crc in record at byte {pos}")
        parts = [payload] if kind in (FULL, FIRST) else [*parts, payload]
        if kind in (FULL, LAST):
            records.append(pb.Record.FromString(b"".join(parts)))
        pos += HEADER + length
    return records


@dataclass
class OfflineRun:
    run_id: str = ""
    project: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)  # nested, as passed to W&B
    history: list[dict[str, Any]] = field(default_factory=list)  # one dict per logged row
    summary: dict[str, Any] = field(default_factory=dict)  # keys as in history
    files: list[Path] = field(default_factory=list)


def _key(item: Any) -> str:
    return ".".join(item.nested_key) if item.nested_key else item.key


def _set_config(config: dict[str, Any], item: Any) -> None:
    *parents, leaf = list(item.nested_key) or [item.key]
    if parents[:1] == ["_wandb"] or leaf == "_wandb":
        return
    for p in parents:
        config = config.setdefault(p, {})
    config[leaf] = json.loads(item.value_json)


def read_run(path: str | Path, run_id: str | None = None, wait_s: float = 5.0) -> OfflineRun:
    """The run under ``path`` (a ``.wandb`` file, a run dir, or any dir above ``wandb/``).

    Waits up to ``wait_s`` for the newest file's ``exit`` record (see the module doc), then reads
    what is there.
    """
    path = Path(path)
    files = [path] if path.is_file() else sorted({p.resolve() for p in path.glob("**/run-*.wandb")})
    if run_id is not None:
        files = [f for f in files if f.name == f"run-{run_id}.wandb"]
    ids = {f.name[4:-6] for f in files}
    if len(ids) != 1:
        raise ValueError(f"expected one W&B run under {path}, found ids {sorted(ids)}; pass run_id=")
    run = OfflineRun(files=sorted(files, key=lambda f: f.parent.name))  # offline-run-<time>-<id>
    deadline = time.monotonic() + wait_s
    while not any(r.HasField("exit") for r in read_records(run.files[-1])) and time.monotonic() < deadline:
        time.sleep(0.02)
    for record in (r for f in run.files for r in read_records(f)):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.project, run.group, run.job_type = r.run_id, r.project, r.run_group, r.job_type
            run.tags = list(r.tags)
            for item in r.config.update:
                _set_config(run.config, item)
        elif kind == "config":
            for item in record.config.update:
                _set_config(run.config, item)
        elif kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                if not _key(item).startswith("_wandb"):
                    run.summary[_key(item)] = json.loads(item.value_json)
            for item in record.summary.remove:
                run.summary.pop(_key(item), None)
    return run
