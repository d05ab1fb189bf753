"""Where a run's time goes (the ``timing`` block of ``result.json`` and of each attempt) and the
study's efficiency (training seconds over allocated seconds) that ``status`` and ``collect`` print.

Real runs on generated data; a pack of two runs in a fresh process (so that its imports are real);
the efficiency on a written study with real ``sacct`` text, and once on the local Slurm cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime

import pytest
from conftest import read_json, run_cli, write_grid

from cifar_hpc.cluster import slurm
from cifar_hpc.report import efficiency
from cifar_hpc.study import recorded
from cifar_hpc.study.manifest import JobRecord
from cifar_hpc.study.states import classify_all
from cifar_hpc.training import attempts, timing
from cifar_hpc.training.results import write_json_atomic

START_UP = ("imports_s", "data_s", "process_group_s", "setup_s", "compile_s")


def check_block(block: dict) -> None:
    """Every field there, numbers non-negative, and the start-up parts add up to the whole."""
    assert set(block) == set(attempts.FIELDS)
    assert all(v is None or v >= 0 for v in block.values()), block
    parts = sum(block[name] or 0.0 for name in START_UP)
    assert block["to_first_step_s"] == pytest.approx(parts, abs=0.01), block


def test_a_run_records_where_its_time_goes(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data-dir", tiny_data, "--out", out, "--epochs", "1", "--batch-size", "36"]
    result = run_cli([*args, "--num-workers", "0", "--no-stage", "--wandb-mode", "offline"], capsys)
    assert result.code == 0, result.err
    res = read_json(out / "result.json")
    block = res["timing"]
    check_block(block)
    assert block["compile_s"] is None  # compile off
    assert block["to_first_step_s"] > 0 and block["data_s"] > 0 and block["setup_s"] > 0
    assert block["train_s"] > 0 and block["val_s"] > 0 and block["test_s"] > 0
    assert block["teardown_s"] is not None  # W&B finished after result.json was first written
    # training excludes validation: the two never overlap, and together they fit in the attempt
    assert block["train_s"] == res["train_s"]
    assert block["to_first_step_s"] + block["train_s"] + block["val_s"] + block["test_s"] <= res["wall_s"] + 0.05
    (attempt,) = res["attempts"]
    assert attempt["timing"] == block and attempt["devices"] == 1
    (recorded,) = read_json(out / "attempts.json")
    assert recorded["timing"] == block


def test_compile_overhead_is_the_first_step_less_the_steady_one():
    clock = timing.PhaseClock(started=100.0, imported=103.0, compile=True)
    clock.marks.update(data_start=103.5, data_end=104.0, fit=105.0, setup=105.5, first_step=107.0)
    clock.steps = [5.0, 1.0, 1.2, 0.9]
    block = clock.block()
    assert block["compile_s"] == 4.0 and block["imports_s"] == 3.0 and block["process_group_s"] == 0.5
    assert block["setup_s"] == 3.0  # 103.0-103.5, 104.0-105.0, 105.5-107.0
    assert block["to_first_step_s"] == 7.0 + 4.0
    check_block(block)
    # a later run of a pack: its attempt starts after the imports, which it does not pay
    later = timing.PhaseClock(started=200.0, imported=103.0)
    later.marks.update(data_start=200.1, data_end=200.2, fit=200.5, setup=200.6, first_step=201.0)
    assert later.block()["imports_s"] == 0.0 and later.block()["compile_s"] is None
    assert later.block()["to_first_step_s"] == 1.0
    # attempts add up per field; a field no attempt measured stays null
    total = attempts.sum_blocks([block, later.block(), None])
    assert total["to_first_step_s"] == 12.0 and total["compile_s"] == 4.0 and total["teardown_s"] is None


PACK = """
import json, sys
from cifar_hpc.config.train_config import TrainConfig
from cifar_hpc.training.pack import run_pack

data, out = sys.argv[1:3]
configs = [
    TrainConfig.from_dict({"epochs": 1, "batch_size": 36, "seed": seed, "out_dir": f"{out}/{seed}",
                           "data": {"dir": data, "num_workers": 0, "stage": False}, "wandb": {"mode": "disabled"}})
    for seed in (0, 1)
]
print(json.dumps([r["status"] for r in run_pack(configs)]))
"""


def test_a_pack_pays_its_start_up_once(tiny_data, tmp_path):
    """Two runs in one fresh process: the second pays no imports and starts sooner."""
    done = subprocess.run(
        [sys.executable, "-c", PACK, str(tiny_data), str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == ["completed", "completed"]
    first, second = (read_json(tmp_path / str(seed) / "result.json")["timing"] for seed in (0, 1))
    check_block(first)
    check_block(second)
    assert first["imports_s"] > 0.5 and second["imports_s"] == 0  # torch and Lightning: once
    assert second["to_first_step_s"] < first["to_first_step_s"]


# What `sacct -X -n -P -D --format=JobID,State,ElapsedRaw,AllocTRES,Submit,Start -j 3001` prints
# (Slurm 22.05): task 1 was requeued once (-D lists both attempts), task 2 still pends.
SACCT_USAGE = """\
3001_0|COMPLETED|100|billing=1,cpu=1,mem=3G,node=1|2026-12-01T06:39:09|2026-12-01T06:39:19
3001_1|REQUEUED|40|billing=1,cpu=1,mem=3G,node=1|2026-12-01T06:39:09|2026-12-01T06:39:39
3001_1|COMPLETED|60|billing=1,cpu=1,mem=3G,node=1|2026-12-01T06:40:30|2026-12-01T06:40:40
3001_[2]|PENDING|0||2026-12-01T06:39:09|Unknown
"""
# a two-GPU job: its devices are GPUs, not CPUs
SACCT_GPU = "3002|RUNNING|30|billing=16,cpu=16,gres/gpu=2,mem=64G,node=1|2026-12-01T06:41:00|2026-12-01T06:41:20\n"


def test_parse_sacct_usage_real_output():
    usage = slurm.parse_usage(SACCT_USAGE)
    assert [u.elapsed_s for u in usage["3001_1"]] == [40, 60] and usage["3001_1"][0].queue_wait_s == 30
    assert usage["3001_2"][0].elapsed_s == 0 and usage["3001_2"][0].queue_wait_s is None
    (gpu_job,) = slurm.parse_usage(SACCT_GPU)["3002"]
    assert (gpu_job.gpus, gpu_job.devices, gpu_job.elapsed_s, gpu_job.queue_wait_s) == (2, 2, 30, 20)
    assert (usage["3001_0"][0].gpus, usage["3001_0"][0].devices) == (0, 1)  # CPU: one task per node
    assert slurm.parse_sacct(SACCT_USAGE)["3001_1"] == ("REQUEUED", "COMPLETED")  # states unchanged
    assert slurm.parse_usage("3001_0|COMPLETED\n") == {}  # the states-only format has no usage


def _attempt(train_s: float, wall_s: float, devices: int = 1) -> dict:
    return {"started_at": "2026-12-01T06:39:20+00:00", "host": "n1", "train_s": train_s, "wall_s": wall_s,
            "devices": devices}  # fmt: skip


def write_study(root, jobs: list[dict], results: dict[str, dict | None]) -> None:
    runs = [{"run_id": run_id, "cell": "baseline", "model": "resnet18", "seed": i} for i, run_id in enumerate(results)]
    write_json_atomic(root / "study.json", {"schema": 1, "grid": "eff", "runs": runs, "jobs": jobs})
    for run_id, result in results.items():
        write_json_atomic(root / run_id / "config.json", {"run_id": run_id, "model": "resnet18"})
        if result is not None:
            config = {"model": "resnet18", "seed": 0, "grid": "eff", "cell": "baseline"}
            write_json_atomic(root / run_id / "result.json", {"run_id": run_id, "config": config, **result})


def test_efficiency_of_a_written_study(tmp_path):
    """Array 3001: a pack of two runs in task 0 (its allocation counted once), a requeued run in
    task 1 (both attempts allocated, both trained), a pending one; on CPU."""
    root = tmp_path / "eff"
    done = {"status": "completed", "test_acc": 0.5, "finished_at": "2026-12-01T07:00:00+00:00"}
    write_study(
        root,
        [
            {
                "run_ids": ["a", "b", "c", "d"],
                "job_id": "3001",
                "array": True,
                "task_ids": [0, 0, 1, 2],
                "submitted_at": "2026-12-01T06:39:09+00:00",
            }
        ],  # fmt: skip
        {
            "a": {**done, "attempts": [_attempt(31.0, 50.0)]},
            "b": {**done, "status": "failed", "test_acc": None, "error": "nan", "attempts": [_attempt(10.0, 45.0)]},
            "c": {**done, "attempts": [_attempt(20.0, 35.0), _attempt(25.0, 55.0)]},
            "d": None,
        },
    )
    study = recorded.load_study(root)
    view = slurm.JobsView(queue={"3001_2": "PENDING"}, history=slurm.parse_sacct(SACCT_USAGE),
                          usage=slurm.parse_usage(SACCT_USAGE))  # fmt: skip
    eff = efficiency.study_efficiency(study, view, classify_all(study, view))
    assert eff.train_s == 31 + 10 + 20 + 25
    assert eff.allocated_s == 100 + 40 + 60  # task 0 once for its two runs; both attempts of task 1
    assert eff.ratio == pytest.approx(86 / 200) and eff.source == "sacct" and eff.in_progress == 1
    assert eff.queue_wait_mean_s == pytest.approx((10 + 30 + 10) / 3)  # a pending task: not known yet
    assert efficiency.efficiency_line(eff) == (
        "efficiency: 43% of 0.0556 allocated CPU-process-hours trained (train 0.0239 h); queue wait mean 17 s "
        "(Slurm); 1 run still in progress, its training not yet counted"
    )
    assert eff.to_dict() == {
        "train_s": 86.0,
        "allocated_s": 200.0,
        "ratio": 0.43,
        "queue_wait_mean_s": 16.7,
        "source": "sacct",
        "devices": "cpu",
        "in_progress": 1,
    }

    # the same runs trained by the local executor: the runs' own wall time is what was held
    local = tmp_path / "local"
    write_study(local, [], {"a": {**done, "attempts": [_attempt(30.0, 50.0, devices=2)]}})
    study = recorded.load_study(local)
    eff = efficiency.study_efficiency(study, None, classify_all(study, None))
    assert (eff.train_s, eff.allocated_s, eff.source, eff.queue_wait_mean_s) == (60.0, 100.0, "wall", None)
    assert efficiency.efficiency_line(eff) == (
        "efficiency: 60% of 0.0278 CPU-process-hours of the runs' wall time trained (train 0.0167 h)"
    )


@pytest.mark.slurm
def test_status_and_collect_report_sacct_efficiency(slurm_cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = write_grid(tmp_path, "effslurm", '[[cells]]\nname = "baseline"\nset = { batch_size = 36 }\n')
    submitted = run_cli(["submit", "--grid", grid, "--wait", "--wait-timeout-min", "5"], capsys)
    assert submitted.code == 0, submitted.out + submitted.err
    root = tmp_path / "runs" / "effslurm"
    job = read_json(root / "study.json")["jobs"][0]["job_id"]
    (result,) = (read_json(p) for p in root.glob("*/result.json"))
    assert result["status"] == "completed"
    check_block(result["timing"])
    # --wait returns once the result is written; the job's teardown may still be running, its elapsed growing
    job_id = JobRecord.from_dict(read_json(root / "study.json")["jobs"][0]).slurm_id(0)
    assert slurm_cluster.wait_job(job_id, timeout_s=120) == "COMPLETED"

    line = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", job, "--format=ElapsedRaw,AllocTRES,Submit,Start"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.split()[0]  # fmt: skip
    elapsed, tres, submit, start = line.split("|")
    nodes = int(dict(kv.split("=") for kv in tres.split(","))["node"])
    wait = (datetime.fromisoformat(start) - datetime.fromisoformat(submit)).total_seconds()

    shown = run_cli(["status", root, "--json"], capsys)
    assert shown.code == 0, shown.err
    (entry,) = json.loads(shown.out)["studies"]
    eff = entry["efficiency"]
    assert eff["source"] == "sacct" and eff["allocated_s"] == int(elapsed) * nodes
    assert eff["train_s"] == pytest.approx(result["train_s"]) and eff["queue_wait_mean_s"] == wait
    assert 0 < eff["ratio"] < 1
    text = run_cli(["status", root], capsys).out
    assert f"% of {eff['allocated_s'] / 3600:.3g} allocated CPU-process-hours trained" in text and "(Slurm)" in text

    table = json.loads(run_cli(["collect", root, "-f", "json"], capsys).out)
    assert table["efficiency"] == eff
