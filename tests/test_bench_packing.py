"""bench.packing's pure helpers: per-run start-up (``timing.to_first_step_s`` once train.py records
it, the two bounds until then), first vs later run of a task, and sacct's allocations."""

from __future__ import annotations

from datetime import datetime

from bench.packing import mark_positions, parse_allocations, run_row, startup_summary


def result(task: str, started: str, wall: float, train: float, timing: dict | None = None) -> dict:
    attempt = {"started_at": started, "slurm_job": task, "train_images": 36}
    return {"run_id": started[-6:], "status": "completed", "wall_s": wall, "train_s": train, "attempts": [attempt]} | (
        {"timing": timing} if timing else {}
    )


def at(iso: str, plus_s: float) -> float:
    return datetime.fromisoformat(iso).timestamp() + plus_s


def test_startup_bounds_first_vs_later_and_timing_when_present():
    first, later = "2026-12-01T06:47:25.000+00:00", "2026-12-01T06:47:49.000+00:00"
    rows = mark_positions(
        [
            run_row(result("7", later, wall=8.0, train=5.0), config_mtime=at(later, 0.25)),
            run_row(result("7", first, wall=24.0, train=9.0), config_mtime=at(first, 8.0)),
            run_row(result("8", first, wall=20.0, train=8.0, timing={"to_first_step_s": 11.5, "imports_s": 6.0})),
        ]
    )
    assert [(r["task"], r["position"]) for r in rows] == [("7", 0), ("7", 1), ("8", 0)]
    assert (rows[0]["to_fit_s"], rows[0]["non_training_s"], rows[0]["to_first_step_s"]) == (8.0, 15.0, None)
    assert rows[2]["to_first_step_s"] == 11.5 and rows[2]["to_fit_s"] is None  # no config.json given

    summary = startup_summary(rows)
    assert summary["first"]["runs"] == 2 and summary["later"]["runs"] == 1
    assert summary["first"]["non_training_s"] == 13.5 and summary["later"]["non_training_s"] == 3.0
    assert summary["first"]["timing"] == {"imports_s": 6.0, "to_first_step_s": 11.5}
    assert summary["later_over_first"]["to_fit_s"] == round(0.25 / 8.0, 3)
    assert summary["later_over_first"]["to_first_step_s"] is None  # no later run has a timing block


def test_a_requeued_run_gives_no_bounds():
    row = run_row(result("7", "2026-12-01T06:47:25+00:00", 30.0, 9.0) | {"attempts": [{}, {}]}, config_mtime=1.0)
    assert row["to_fit_s"] is None and row["non_training_s"] is None


def test_allocations_count_each_task_once_and_skip_pending_array_lines():
    text = (
        "519_0|COMPLETED|2026-12-01T06:50:01|2026-12-01T06:50:02|2026-12-01T06:50:30|28|1\n"
        "519_1|CANCELLED by 0|2026-12-01T06:50:01|2026-12-01T06:50:02|2026-12-01T06:50:12|10|2\n"
        "519_[2-7]|PENDING|2026-12-01T06:50:01|Unknown|Unknown|0|1\n"
    )
    rows = parse_allocations(text)
    assert [(r["task"], r["state"], r["cpu_s"]) for r in rows] == [
        ("519_0", "COMPLETED", 28),
        ("519_1", "CANCELLED", 20),
    ]


def test_other_jobs_count_only_their_cpu_seconds_inside_our_window():
    from bench.packing import PREFIX, other_jobs

    text = (
        f"607_0|{PREFIX}-0|2026-12-01T07:12:04|2026-12-01T07:13:10|1\n"  # ours
        "605|effdemo-0|2026-12-01T07:12:03|2026-12-01T07:12:36|1\n"  # 32 s inside
        "610|big|2026-12-01T07:13:00|2026-12-01T07:20:00|2\n"  # 43 s inside, 2 CPUs
        "611|later|Unknown|Unknown|1\n"
    )
    seen = other_jobs(text, "2026-12-01T07:12:04", "2026-12-01T07:13:43")
    assert seen == {"jobs": 2, "names": ["big", "effdemo-0"], "cpu_s_in_window": 32 + 2 * 43}
