"""A variant of a study's run: ``train --from-run X --lr 0.01`` (or any flag or ``--set``) trains
another run in X's study folder, recorded in its ``study.json`` like a submitted run, so that
``status``, ``logs`` and ``collect`` see it.

Its cell says what it changes against X's cell (``baseline+lr=0.01``): its own row of the table,
compared with X's (``compare_to``), never silently one more seed of X's row. A variant that only
changes the seed is another seed of X's setting: it keeps X's cell and joins X's row.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from cifar_hpc.cluster.processes import this_process
from cifar_hpc.config.train_config import TrainConfig, setting_of
from cifar_hpc.study.design import changes
from cifar_hpc.study.manifest import JobRecord, record_submission
from cifar_hpc.study.recorded import RecordedRun, Study

FOLLOWS = ("seed", "data.fingerprint")
"""Changes the cell's name leaves out: the seed is what a row's runs differ in, and the data's
fingerprint follows ``data.dir``."""


def changed_settings(cfg: TrainConfig, original: TrainConfig) -> dict[str, Any]:
    """What ``cfg`` changes against ``original`` in what is learnt, seed and data fingerprint aside."""
    return {key: value for key, value in changes(cfg, original).items() if key not in FOLLOWS}


def variant_cell(cell: str, cfg: TrainConfig, original: TrainConfig) -> str:
    """``cell`` and what ``cfg`` changes against ``original`` (the run it derives from), as ``--set``
    would write it: ``baseline+lr=0.01``, each setting by its last name unless two changed settings
    share it (then ``optim.lr=0.01``). Only the seed changed: ``cell`` (another seed of its row); only
    the data: ``cell+<its setting>``."""
    changed = sorted(changed_settings(cfg, original).items())
    if not changed:
        same_data = cfg.data.fingerprint == original.data.fingerprint
        return cell if same_data else f"{cell}+{setting_of(cfg.to_dict())[:6]}"
    last = [key.rpartition(".")[2] for key, _ in changed]
    return "+".join(
        [cell] + [f"{short if last.count(short) == 1 else key}={_word(v)}" for short, (key, v) in zip(last, changed)]
    )


def _word(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(map(_word, value))
    return str(value)


def variant_entry(original: RecordedRun, cfg: TrainConfig, before: TrainConfig) -> dict[str, Any]:
    """What ``study.json`` records of the variant ``cfg`` of ``original`` (``before``: its config), as
    ``launch.expected_runs`` does of a grid's run: its cell, axes (the original's, at the variant's
    values), the cell it compares with, what that comparison changes, and its setting."""
    own_row = cfg.cell != original.cell
    entry: dict[str, Any] = {
        "run_id": cfg.run_id,
        "cell": cfg.cell,
        "model": cfg.model,
        "seed": cfg.seed,
        "axes": {name: getattr(cfg, name, None) for name in original.axes} if original.axes is not None else None,
        "compare_to": original.cell if own_row else original.compare_to,
        "setting": setting_of(cfg.to_dict()),
        "out_dir": cfg.out_dir,
    }
    if own_row:
        entry["changes"] = sorted(key for key in changes(cfg, before) if key != "seed")  # rows pair by seed
    elif original.changes is not None:
        entry["changes"] = list(original.changes)
    return entry


def record_variant(study: Study, entry: dict[str, Any]) -> JobRecord:
    """Record the variant in its study's ``study.json`` with this process as its local job (``status``
    then shows it running while it trains here, and stopped if this process dies). The caller holds
    the study's lock (``submit.launch.study_lock``)."""
    me = this_process()
    job = JobRecord(
        run_ids=(entry["run_id"],),
        submitted_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        task_ids=(0,),
        executor="local",
        host=me.host,
        pid=me.pid,
        process_start=me.start,
    )
    grid = study.grid or study.root.name
    # as_defined=False: a variant is not a run the grid's file defines
    record_submission(
        study.root, grid=grid, baseline_cell=study.baseline_cell, runs=[entry], jobs=[job], as_defined=False
    )
    return job
