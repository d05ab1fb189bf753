"""``cifar-hpc collect``: a fixed study (completed, failed, corrupt, missing, running runs) pinned by
golden files per format; the paired CI against scipy; bad input refused; plots are real PNGs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_golden, run_cli
from scipy import stats

from cifar_hpc.base.errors import UserError
from cifar_hpc.cluster.slurm import JobsView as SlurmView
from cifar_hpc.report import aggregate, latex, plots, render
from cifar_hpc.study import manifest, recorded
from cifar_hpc.training import results
from cifar_hpc.training.results import write_json_atomic


def collect_(root, slurm=None, *, baseline=None):
    """load_study + aggregate, as `cifar-hpc collect` does."""
    return aggregate.aggregate(recorded.load_study(root, baseline=baseline), slurm)


# (model, cell) -> per seed 0, 1, 2: test_acc, or a word for what became of that run
ACC = {
    ("resnet18", "baseline"): [0.9312, 0.9287, 0.9330],
    ("resnet18", "+swa"): [0.9401, 0.9365, 0.9412],
    ("resnet18", "+clip"): [0.9305, 0.9299, 0.9318],
    ("resnet18", "+lr_find"): [0.9350, "failed", "corrupt"],
    ("resnet34", "baseline"): [0.9402, 0.9380, "pending"],
    ("resnet34", "+swa"): [0.9455, 0.9431, "running"],
    ("resnet34", "+clip"): ["missing", 0.9390, "timeout"],
    ("resnet34", "+lr_find"): [0.9361, 0.9410, "requeued"],
}
JOB = "1001"


def run_id_of(model: str, cell: str, seed: int) -> str:
    return hashlib.sha256(f"{model}/{cell}/{seed}".encode()).hexdigest()[:12]


def make_result(
    model: str,
    cell: str | None,
    seed: int,
    acc: float,
    *,
    grid: str | None = "ablation",
    data: str = "generated",
    status: str = "completed",
    tricks: list[str] | None = None,
) -> dict:
    i = seed + 3 * ["baseline", "+swa", "+clip", "+lr_find"].index(
        cell if cell in ("+swa", "+clip", "+lr_find") else "baseline"
    )
    big = model == "resnet34"
    return {
        "schema": 1,
        "run_id": run_id_of(model, cell or "", seed),
        "status": status,
        "error": None if status == "completed" else "loss became NaN at step 120 (epoch 2)",
        "config": {"model": model, "seed": seed, "grid": grid, "cell": cell, "epochs": 10},
        "data": data,
        "test_acc": acc if status == "completed" else None,
        "best_val_acc": round(acc - 0.004, 4) if acc is not None else None,
        "test_weights": "best",
        "epochs_run": 10 if cell != "+lr_find" else 9,
        "stopped_epoch": None,
        "wall_s": (900.0 if big else 540.0) + 7 * i,
        # start-up (imports 6 s, data, set-up) is in wall_s, not in the work cost × compares
        "timing": {"imports_s": 6.0, "data_s": 2.0, "setup_s": 4.0, "train_s": (860.0 if big else 500.0) + 7 * i}
        | {"val_s": 20.0, "test_s": 5.0},
        "train_images_per_s": (5200.0 if big else 9100.0) - 13 * i,
        "gpu_hours": round(((900.0 if big else 540.0) + 7 * i) / 3600, 6),
        "gpu_util_mean": None if (big and seed == 1) else 91.0 - i,
        "gpu_util_p95": None if (big and seed == 1) else 99.0,
        "gpu_mem_peak_mib": (6100.0 if big else 3900.0) + 10 * seed,
        "lr_found": 0.031 + 0.002 * seed if cell == "+lr_find" else None,
        "tricks": tricks if tricks is not None else ["crop", "flip"],
        "resolutions": [],
        "finished_at": f"2026-11-24T0{seed}:00:00+00:00",
    }


def make_study(root: Path, *, data: str = "generated") -> Path:
    """The fixed study of the golden files: runs/ablation/ with study.json and run folders."""
    runs, run_ids = [], []
    for (model, cell), per_seed in ACC.items():
        for seed, what in enumerate(per_seed):
            run_id = run_id_of(model, cell, seed)
            runs.append(
                {"run_id": run_id, "cell": cell, "model": model, "seed": seed, "out_dir": f"runs/ablation/{run_id}"}
            )
            run_ids.append(run_id)
            folder = root / run_id
            config = {"run_id": run_id, **make_result(model, cell, seed, 0.9)["config"]}  # as training writes it
            if isinstance(what, float):
                write_json_atomic(folder / "config.json", config)
                result = make_result(model, cell, seed, what, data=data)
                write_json_atomic(folder / "result.json", result | {"test_images": 10_000})
            elif what == "failed":
                write_json_atomic(folder / "config.json", config)
                write_json_atomic(
                    folder / "result.json", make_result(model, cell, seed, None, data=data, status="failed")
                )
            elif what == "corrupt":
                write_json_atomic(folder / "config.json", config)
                text = json.dumps(make_result(model, cell, seed, 0.95, data=data))
                (folder / "result.json").write_text(text[: len(text) // 2])  # a half-written file
                (folder / ".result.json.x1y2.tmp").write_text("{")  # an atomic writer's leftover: ignored
            elif what in ("running", "requeued"):
                write_json_atomic(folder / "config.json", config)
                (folder / "checkpoints").mkdir()
    write_json_atomic(
        root / "study.json",
        {
            "schema": 1,
            "grid": "ablation",
            "baseline_cell": "baseline",
            "runs": runs,
            "jobs": [
                {
                    "run_ids": run_ids,
                    "job_id": JOB,
                    "array": True,
                    "task_ids": list(range(len(run_ids))),
                    "submitted_at": "2026-11-23T07:00:00+00:00",  # before every result's finished_at
                    "log_pattern": "runs/ablation/logs/%A_%a.out",
                }
            ],
        },
    )
    return root


def slurm_id(model: str, cell: str, seed: int) -> str:
    keys = [(m, c, s) for (m, c), per_seed in ACC.items() for s in range(len(per_seed))]
    return f"{JOB}_{keys.index((model, cell, seed))}"


def fixed_slurm() -> SlurmView:
    """What squeue and sacct say about the fixed study's array."""
    return SlurmView(
        queue={
            slurm_id("resnet34", "baseline", 2): "PENDING",
            slurm_id("resnet34", "+swa", 2): "RUNNING",
            slurm_id("resnet34", "+lr_find", 2): "PENDING",
        },
        history={
            slurm_id("resnet34", "+clip", 2): ("TIMEOUT",),
            slurm_id("resnet34", "+lr_find", 2): ("PREEMPTED", "PENDING"),
            slurm_id("resnet34", "+swa", 2): ("RUNNING",),
        },
    )


@pytest.fixture
def study(tmp_path) -> Path:
    return make_study(tmp_path / "runs" / "ablation")


@pytest.fixture
def summary(study) -> aggregate.Summary:
    return aggregate.aggregate(recorded.load_study(study), fixed_slurm())


GOLDEN_NAMES = {
    "rich": "collect/table.txt",
    "md": "collect/table.md",
    "csv": "collect/table.csv",
    "json": "collect/table.json",
    "latex": "collect/table.tex",
}


@pytest.mark.parametrize("fmt", render.FORMATS)
def test_golden_formats(summary, fmt):
    assert_golden(GOLDEN_NAMES[fmt], render.render(summary, fmt))


def test_golden_terminal_at_80_columns(summary):
    """A usual terminal: the statistics stay (Δ wraps), the per-run details give way, and it says which."""
    text = render.render_rich(summary, width=80)
    assert_golden("collect/table_80.txt", text)
    header = text.splitlines()[2]
    assert all(name in header for name in ("Δ pp", "p adj", "MDE pp")) and "LR found" not in header
    assert max(len(line) for line in text.splitlines()) <= 80


@pytest.mark.parametrize("fmt", render.FORMATS)
def test_generated_data_is_labelled_in_every_format(summary, fmt):
    text = render.render(summary, fmt)
    assert "generated" in text.lower()
    if fmt != "csv":
        assert "GENERATED DATA" in text
    else:
        assert all(line.startswith("generated,") for line in text.splitlines()[1:])


def test_real_data_is_not_labelled_generated(tmp_path):
    summary = aggregate.aggregate(recorded.load_study(make_study(tmp_path / "s", data="cifar10")), fixed_slurm())
    assert not summary.generated and summary.data == "cifar10"
    for fmt in render.FORMATS:
        assert "GENERATED" not in render.render(summary, fmt)
    assert "(CIFAR-10)" in render.render(summary, "md")


def test_rows_per_model_baseline_first_then_by_effect(summary):
    order = [(r.model, r.cell) for r in summary.rows]
    assert order[:4] == [
        ("resnet18", "baseline"),
        ("resnet18", "+swa"),
        ("resnet18", "+lr_find"),
        ("resnet18", "+clip"),
    ]
    assert order[4][1] == "baseline" and {m for m, _ in order[4:]} == {"resnet34"}
    deltas = [r.delta_mean for r in summary.rows if r.model == "resnet34" and r.delta_mean is not None]
    assert deltas == sorted(deltas, reverse=True)


def test_rows_are_paired_by_seed_against_scipy(summary):
    row = next(r for r in summary.rows if (r.model, r.cell) == ("resnet18", "+swa"))
    low, high = stats.ttest_rel(ACC["resnet18", "+swa"], ACC["resnet18", "baseline"]).confidence_interval()
    assert row.delta_ci_low == pytest.approx(low, rel=1e-5) and row.delta_ci_high == pytest.approx(high, rel=1e-5)
    assert row.significant is True and row.n == 3 and row.expected == 3
    # resnet34 +swa pairs seeds 0 and 1 only (seed 2 is still running, the baseline's seed 2 pending)
    row = next(r for r in summary.rows if (r.model, r.cell) == ("resnet34", "+swa"))
    low, high = stats.ttest_rel(ACC["resnet34", "+swa"][:2], ACC["resnet34", "baseline"][:2]).confidence_interval()
    assert row.delta_n_pairs == 2 and row.delta_ci_low == pytest.approx(low, rel=1e-5)


def test_pairing_uses_only_common_seeds(summary):
    row = next(r for r in summary.rows if (r.model, r.cell) == ("resnet34", "+clip"))
    # +clip has only seed 1; the baseline has seeds 0 and 1: one pair, too few for an interval
    assert row.n == 1 and row.delta_n_pairs == 1 and row.delta_ci_low is None
    assert row.note == "1 pair: no test" and row.significant is None and row.p_value is None
    assert row.delta_mean == pytest.approx(0.9390 - 0.9380, abs=1e-6)
    assert "| +0.10 | 1 pair | — |" in render.render(summary, "md")  # the reason where the p-value would be


def test_failed_missing_running_corrupt_are_listed(summary):
    assert summary.counts == {
        "completed": 17,
        "failed": 2,
        "corrupt": 1,
        "running": 1,
        "pending": 1,
        "requeued": 1,
        "missing": 1,
        "unknown": 0,
    }
    failed = {(f["model"], f["cell"], f["seed"]): f for f in summary.failed}
    nan = failed["resnet18", "+lr_find", 1]
    assert "NaN" in nan["error"] and nan["log"] == f"runs/ablation/logs/{slurm_id('resnet18', '+lr_find', 1)}.out"
    assert "TIMEOUT" in failed["resnet34", "+clip", 2]["error"]
    assert [(x["model"], x["cell"], x["seed"]) for x in summary.missing] == [("resnet34", "+clip", 0)]
    assert {(x["cell"], x["state"]) for x in summary.running} == {
        ("baseline", "pending"),
        ("+swa", "running"),
        ("+lr_find", "requeued"),
    }
    assert summary.corrupt == [
        {
            "run_id": run_id_of("resnet18", "+lr_find", 2),
            "path": f"{run_id_of('resnet18', '+lr_find', 2)}/result.json",
            "reason": summary.corrupt[0]["reason"],
        }
    ]
    assert "half-written" in summary.corrupt[0]["reason"]


def test_corrupt_result_is_never_counted(summary):
    row = next(r for r in summary.rows if (r.model, r.cell) == ("resnet18", "+lr_find"))
    assert row.n == 1 and row.seeds == [0] and row.n_corrupt == 1 and row.n_failed == 1
    assert row.test_acc_mean == pytest.approx(0.9350)


@pytest.mark.parametrize(
    "content",
    [
        "",
        "{",
        '{"status": "completed"',
        "[1, 2]",
        '{"status": "done"}',
        '{"status": "completed", "config": {"model": "resnet18", "seed": 0}}',
        '{"status": "completed", "config": {"model": "resnet18", "seed": 0}, "test_acc": NaN}',
        "\x00\x00\x00",
    ],
)
def test_bad_result_files_are_reported_not_fatal(tmp_path, content):
    root = tmp_path / "study"
    write_json_atomic(root / "good" / "result.json", make_result("resnet18", "baseline", 0, 0.9))
    (root / "bad").mkdir(parents=True)
    (root / "bad" / "result.json").write_text(content)
    summary = collect_(root)
    assert summary.counts["corrupt"] == 1 and summary.counts["completed"] == 1
    assert summary.corrupt[0]["path"] == "bad/result.json"
    assert sum(r.n for r in summary.rows) == 1


def test_what_collect_calls_corrupt_training_does_not_take_for_finished():
    """One validity rule (results.result_problem): collect reports the run corrupt, submit retrains
    it, and training's ``usable_completed`` refuses to skip it."""
    good = make_result("resnet18", "baseline", 0, 0.9)
    no_acc = {**good, "test_acc": None}
    assert results.usable_completed(good, good["run_id"]) and results.result_problem(good) is None
    assert not results.usable_completed(no_acc, good["run_id"])
    assert results.result_problem(no_acc) == "completed without a numeric test_acc"
    assert not results.usable_completed(good, "another-run")  # another run's result
    failed = make_result("resnet18", "baseline", 0, None, status="failed")
    assert results.result_problem(failed) is None and not results.usable_completed(failed)
    assert not results.usable_completed(None) and not results.usable_completed([1, 2])


def test_unreadable_bytes_do_not_crash(tmp_path):
    root = tmp_path / "study"
    write_json_atomic(root / "good" / "result.json", make_result("resnet18", "baseline", 0, 0.9))
    (root / "bad").mkdir()
    (root / "bad" / "result.json").write_bytes(b"\xff\xfe{not utf8")
    assert collect_(root).counts["corrupt"] == 1


def test_mixed_generated_and_real_is_refused(study, capsys):
    write_json_atomic(study / "extra" / "result.json", make_result("resnet18", "baseline", 7, 0.91, data="cifar10"))
    with pytest.raises(UserError, match="generated data and on real CIFAR-10"):
        recorded.load_study(study)
    result = run_cli(["collect", study, "--no-slurm"], capsys)
    assert result.code == 2 and "refusing to put results on generated data and on real CIFAR-10" in result.err
    assert "Traceback" not in result.err


def test_two_grids_are_refused(study, capsys):
    write_json_atomic(study / "other" / "result.json", make_result("resnet18", "baseline", 0, 0.91, grid="models"))
    result = run_cli(["collect", study, "--no-slurm"], capsys)
    assert (
        result.code == 2 and "2 different grids" in result.err and "ablation" in result.err and "models" in result.err
    )


def test_not_a_study_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    result = run_cli(["collect", tmp_path / "empty"], capsys)
    assert result.code == 2 and "is not a study folder" in result.err
    result = run_cli(["collect", tmp_path / "nope"], capsys)
    assert result.code == 2 and "does not exist" in result.err
    write_json_atomic(tmp_path / "one" / "result.json", make_result("resnet18", "baseline", 0, 0.9))
    result = run_cli(["collect", tmp_path / "one"], capsys)
    assert result.code == 2 and "single run's folder" in result.err
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "study.json").write_text("{not json")
    result = run_cli(["collect", tmp_path / "broken"], capsys)
    assert result.code == 2 and "study.json is not valid JSON" in result.err


def test_unknown_format_exits_2(study, capsys):
    result = run_cli(["collect", study, "--format", "xlsx"], capsys)
    assert result.code == 2 and "xlsx" in result.err
    with pytest.raises(UserError, match="unknown format"):
        render.render(collect_(study), "xlsx")


def test_strict_exits_1_when_runs_are_not_all_completed(study, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    result = run_cli(["collect", study, "--strict", "--format", "json"], capsys)
    assert result.code == 1 and "--strict" in result.err
    assert json.loads(result.out)["schema"] == 2  # the table is still written
    assert run_cli(["collect", study, "--format", "json"], capsys).code == 0


def test_strict_passes_on_a_complete_study(tmp_path, capsys):
    root = tmp_path / "done"
    for seed in range(2):
        for cell, acc in (("baseline", 0.90), ("+swa", 0.92)):
            write_json_atomic(
                root / f"{cell}{seed}" / "result.json", make_result("resnet18", cell, seed, acc + seed / 100)
            )
    result = run_cli(["collect", root, "--strict", "--format", "md"], capsys)
    assert result.code == 0, result.err
    assert "+swa" in result.out


def test_cli_writes_every_format_and_plots(study, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))  # collect must work without Slurm
    out = tmp_path / "out"
    for fmt in render.FORMATS:
        result = run_cli(["collect", study, "--format", fmt, "--output", out / f"table.{fmt}"], capsys)
        assert result.code == 0, result.err
        assert (out / f"table.{fmt}").read_text().strip()
    data = json.loads((out / "table.json").read_text())
    assert data["schema"] == 2 and data["generated_data"] is True and data["counts"]["unknown"] == 5
    assert "squeue not found" in " ".join(data["slurm_notes"])
    result = run_cli(["collect", study, "--format", "csv"], capsys)
    assert result.out.startswith("data,model,setting,cell,compare_to,") and "Missing" in result.err
    result = run_cli(["collect", study], capsys)  # the rich table on the terminal
    assert result.code == 0 and "resnet34" in result.out and "GENERATED DATA" in result.out


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk (and check it is a PNG)."""
    head = Path(path).read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_effects_plot_is_a_png_of_the_expected_size(summary, study, tmp_path, capsys):
    path = plots.plot_effects(summary, tmp_path / "effects.png")
    assert png_size(path) == plots.effects_plot_size(2, 3) == (1000, 300)
    result = run_cli(["collect", study, "--no-slurm", "--format", "csv", "--plot", tmp_path / "cli.png"], capsys)
    assert result.code == 0, result.err
    assert png_size(tmp_path / "cli.png") == (1000, 300)


def test_a_one_panel_effects_plot_wraps_its_title_to_fit(summary, tmp_path):
    """One model is one 5-inch panel: the legend line no longer fits in one piece and must not be cut."""
    one = dataclasses.replace(summary, rows=[r for r in summary.rows if r.model == "resnet18"])
    assert png_size(plots.plot_effects(one, tmp_path / "one.png")) == plots.effects_plot_size(1, 3)
    wrapped = plots.wrap_to_width("a " * 200 + "\nshort", 5.0, fontsize=9).splitlines()
    assert len(wrapped) > 3 and wrapped[-1] == "short" and max(map(len, wrapped)) <= 5.0 * 72 / (9 * 0.6)


def test_gpu_plot_of_one_run(study, tmp_path, capsys):
    run_id = run_id_of("resnet18", "+swa", 0)
    with open(study / run_id / "gpu.node0.jsonl", "w") as f:
        for t in range(30):
            f.writelines(
                json.dumps(
                    {
                        "t": 1000.0 + 5 * t,
                        "host": "n1",
                        "node_rank": 0,
                        "gpu": gpu,
                        "util_pct": 80 + gpu + t % 7,
                        "mem_used_mib": 3000 + 10 * t,
                    }
                )
                + "\n"
                for gpu in (0, 1)
            )
        f.write('{"t": 11')  # a killed job's last half line
    result = run_cli(
        ["collect", study, "--no-slurm", "--format", "csv", "--plot-gpu", run_id[:6], tmp_path / "gpu.png"], capsys
    )
    assert result.code == 0, result.err
    assert png_size(tmp_path / "gpu.png") == plots.GPU_PLOT_SIZE
    result = run_cli(
        [
            "collect",
            study,
            "--no-slurm",
            "--format",
            "csv",
            "--plot-gpu",
            run_id_of("resnet18", "+clip", 0),
            tmp_path / "none.png",
        ],
        capsys,
    )
    assert result.code == 2 and "no GPU samples" in result.err
    result = run_cli(
        ["collect", study, "--no-slurm", "--format", "csv", "--plot-gpu", "zzz", tmp_path / "x.png"], capsys
    )
    assert result.code == 2 and f"no run 'zzz' in {study}" in result.err


def test_plain_runs_without_study_json_use_tricks_as_cell(tmp_path):
    root = tmp_path / "runs"
    for seed in range(2):
        write_json_atomic(
            root / f"a{seed}" / "result.json",
            make_result("resnet18", None, seed, 0.90, grid=None, tricks=["crop", "flip"]),
        )
        write_json_atomic(
            root / f"b{seed}" / "result.json",
            make_result("resnet18", None, seed, 0.92 + seed / 100, grid=None, tricks=["crop", "flip", "swa"]),
        )
    summary = aggregate.aggregate(recorded.load_study(root, baseline="crop+flip"))
    assert [r.cell for r in summary.rows] == ["crop+flip", "crop+flip+swa"]
    assert summary.rows[1].delta_mean == pytest.approx(0.025)
    assert any("no study.json" in w for w in summary.warnings)
    no_baseline = collect_(root)
    assert all(r.delta_mean is None for r in no_baseline.rows)
    assert any("--baseline" in w for w in no_baseline.warnings)


def test_duplicate_seed_keeps_the_last_finished_and_warns(tmp_path):
    root = tmp_path / "s"
    early = make_result("resnet18", "baseline", 0, 0.80)
    late = {**make_result("resnet18", "baseline", 0, 0.90), "finished_at": "2026-12-01T00:00:00+00:00"}
    write_json_atomic(root / "old" / "result.json", early)
    write_json_atomic(root / "new" / "result.json", late)
    summary = collect_(root)
    assert summary.rows[0].n == 1 and summary.rows[0].test_acc_mean == pytest.approx(0.90)
    assert any("using the last finished, new" in w for w in summary.warnings)


def test_log_path_pattern():
    assert manifest.log_path("runs/g/logs/%A_%a.out", "1234", 7) == "runs/g/logs/1234_7.out"
    assert manifest.log_path("logs/%j.log", "99", None) == "logs/99.log"
    assert manifest.log_path("logs/100%%-%A.out", "5", 1) == "logs/100%-5.out"
    assert manifest.log_path(None, "5", 1) is None


def test_latex_escapes_cells():
    assert latex.latex_escape("+lr_find & 50%") == r"+lr\_find \& 50\%"


def test_wandb_summary_run_offline(study, capsys):
    from wandb_offline import read_run

    result = run_cli(["collect", study, "--no-slurm", "--format", "csv", "--wandb"], capsys)
    assert result.code == 0, result.err
    run = read_run(study / "wandb")
    assert run.run_id == "ablation-summary" and run.group == "ablation" and run.job_type == "summary"
    assert run.summary["generated_data"] is True and run.summary["runs/completed"] == 17
    tables = list((study / "wandb").glob("offline-run-*/files/media/table/results_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert table["columns"][:5] == ["data", "model", "setting", "cell", "compare_to"] and len(table["data"]) == 8
    assert table["data"][0][:5] == ["generated", "resnet18", "", "baseline", None]


# --- what the table withholds, bounds and says (issue 19) --------------------------------------------


def f32(x: float) -> float:
    """An accuracy as the float32 metric reports it: 0.84 -> 0.8399999737739563."""
    return float(np.float32(x))


def write_pairs(root: Path, pairs: dict[str, list[float]], *, test_images: int | None = 100) -> Path:
    """A study of one model whose cells are compared with ``baseline``, one completed run per seed."""
    entries = []
    for cell, accs in pairs.items():
        for seed, acc in enumerate(accs):
            result = make_result("resnet18", cell, seed, f32(acc), grid="pairs")
            result["run_id"] = run_id = f"{cell.strip('+')}{seed}"
            result["config"]["trick"] = cell
            if test_images is not None:
                result["test_images"] = test_images
            write_json_atomic(root / run_id / "result.json", result)
            reference = None if cell == "baseline" else "baseline"
            entries.append({"run_id": run_id, "cell": cell, "model": "resnet18", "seed": seed, "compare_to": reference})
    write_json_atomic(
        root / "study.json", {"schema": 1, "grid": "pairs", "baseline_cell": "baseline", "runs": entries, "jobs": []}
    )
    return root


def test_the_same_images_of_difference_every_seed_is_no_result(tmp_path, capsys):
    """The issue's table: both seeds exactly 4 of 100 test images better gave p < 0.001, *, MDE 0.00 and
    "seeds for 2 pp: 2". No spread (at the test set's resolution), or one pair: no test, and why. Two pairs
    with a spread get the (cautious, one degree of freedom) test."""
    root = write_pairs(
        tmp_path / "pairs",
        {
            "baseline": [0.80, 0.84, 0.77],
            "+same": [0.84, 0.88, 0.81],  # +4 images on every seed
            "+one": [0.84],  # 1 pair: no spread at all
            "+two": [0.84, 0.89],  # 2 pairs (+4, +5): a spread on one degree of freedom
            "+real": [0.86, 0.89, 0.83],  # +6, +5, +6 images: a test
        },
    )
    result = run_cli(["collect", root, "--no-slurm", "--target-effect", "2", "--format", "json"], capsys)
    assert result.code == 0, result.err
    rows = {row["cell"]: row for row in json.loads(result.out)["rows"]}
    for cell, note in (("+same", "no spread: no test"), ("+one", "1 pair: no test")):
        row = rows[cell]
        assert row["note"] == note and row["delta_mean"] == pytest.approx(0.04)
        assert row["p_value"] is row["p_adjusted"] is row["significant"] is row["mde_pp"] is row["seeds_needed"] is None
    assert rows["+same"]["delta_ci_low"] is None and rows["+same"]["delta_sd"] == 0.0
    assert rows["+real"]["p_value"] is not None and rows["+real"]["mde_pp"] > 0 and rows["+real"]["note"] is None
    assert rows["+two"]["p_value"] > 0.05 and rows["+two"]["mde_pp"] > 4.5  # valid; cannot see its own +4.5 pp
    assert rows["+real"]["test_images"] == 100 and rows["+real"]["test_acc_mean"] == pytest.approx(0.86)
    md = run_cli(["collect", root, "--no-slurm", "--target-effect", "2", "--format", "md"], capsys).out
    assert "| +same | baseline | 3/3 | 84.33 ± 3.51 | +4.00 | no spread | — | — |" in md
    assert "| +one | baseline | 1/1 | 84.00 | +4.00 | 1 pair | — | — |" in md
    marked = [line.split(" | ")[1] for line in md.splitlines() if line.startswith("| resnet18") and "\\*" in line]
    assert marked == ["+real"]  # +two has a spread too, but on one degree of freedom
    assert "accuracies counted in whole test images (1 of 100 = 1 pp) before any statistic" in md
    assert "a reason in place of p adj (1 pair, no spread): no test" in md


def test_without_the_test_sets_size_float32_noise_is_still_no_spread(tmp_path):
    """Results written before test_images was recorded: compared as recorded, to float32 precision."""
    root = write_pairs(
        tmp_path / "old", {"baseline": [0.80, 0.84, 0.77], "+same": [0.84, 0.88, 0.81]}, test_images=None
    )
    summary = collect_(root)
    row = next(r for r in summary.rows if r.cell == "+same")
    assert row.test_images is None and row.note == "no spread: no test" and row.p_value is None
    assert "the test set's size is not recorded: accuracies compared as recorded" in render.render(summary, "md")


def test_an_accuracy_interval_stays_within_0_and_100(tmp_path, capsys):
    """Two seeds, 99% and 90%: the t-interval (1 degree of freedom) reached 125%. Clipped, and said."""
    root = write_pairs(tmp_path / "wide", {"baseline": [0.99, 0.90], "+x": [0.98, 0.91]})
    for row in collect_(root).rows:
        assert 0.0 <= row.test_acc_ci_low <= row.test_acc_mean <= row.test_acc_ci_high <= 1.0
        assert row.test_acc_ci_high == 1.0 and row.test_acc_ci_clipped is True
    result = run_cli(["collect", root, "--no-slurm", "--format", "csv", "--plot-cost", tmp_path / "cost"], capsys)
    assert result.code == 0, result.err
    assert f"wrote {tmp_path / 'cost.png'}" in result.err and png_size(tmp_path / "cost.png") == plots.COST_PLOT_SIZE
    assert ",true," in result.out.splitlines()[1]  # test_acc_ci_clipped in the CSV


def test_a_format_that_contradicts_the_file_is_refused_before_writing(study, tmp_path, capsys):
    result = run_cli(["collect", study, "--no-slurm", "-f", "md", "-o", tmp_path / "x.csv"], capsys)
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    assert "--format md contradicts 'x.csv'" in result.err and not (tmp_path / "x.csv").exists()
    for name, fmt in (("notes.txt", "md"), ("table.out", "json"), ("t.csv", "csv")):  # .txt and unknown: any
        assert run_cli(["collect", study, "--no-slurm", "-f", fmt, "-o", tmp_path / name], capsys).code == 0
    assert (tmp_path / "notes.txt").read_text().startswith("# Study ablation")


def test_a_file_gets_every_column_and_the_path_written_is_the_one_printed(study, tmp_path, capsys):
    result = run_cli(
        ["collect", study, "--no-slurm", "-o", tmp_path / "t.txt", "--plot", tmp_path / "out" / "x"], capsys
    )
    assert result.code == 0, result.err
    text = (tmp_path / "t.txt").read_text()
    assert all(header in text.splitlines()[2] for header in ("p adj", "cost ×", "peak MiB", "LR found"))
    assert "not shown" not in text and "terminal width" not in text
    assert f"wrote {tmp_path / 'out' / 'x.png'}\n" in result.err and png_size(tmp_path / "out" / "x.png")
    assert not (tmp_path / "out" / "x").exists()
    bad = run_cli(["collect", study, "--no-slurm", "-o", tmp_path / "u.md", "--plot", tmp_path / "x.v2"], capsys)
    assert bad.code == 2 and "'x.v2'" in bad.err and ".png" in bad.err and not (tmp_path / "u.md").exists()


LATEX_DOCUMENT = r"""\documentclass{article}
\IfFileExists{booktabs.sty}{\usepackage{booktabs}}{\newcommand{\toprule}{\hline}\newcommand{\midrule}{\hline}\newcommand{\bottomrule}{\hline}}
\begin{document}
\input{table.tex}
\end{document}
"""


def test_latex_is_ascii_and_compiles_with_pdflatex(summary, tmp_path):
    """No raw α, ±, ×, Δ or † (pdflatex sets none of them without packages), `<` not OT1's `¡`, and the
    comparison's columns only (not 18). pdflatex runs where it is installed (Debian: texlive-latex-base)."""
    import shutil
    import subprocess

    text = render.render(summary, "latex")
    table = [line for line in text.splitlines() if not line.startswith("%")]
    assert all(line.isascii() for line in table), [line for line in table if not line.isascii()]
    assert r"$\alpha$ = 0.05" in text and "p adj $<$ 0.05" in text and "$\\times$" in text
    assert text.count(" & ", 0, text.index(r"\\")) == 9  # 10 columns: util, p95, peak MiB... are left out
    assert "% columns left out (empty, or telemetry: -f md or csv has them): wall/run, best val" in text
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (apt-get install texlive-latex-base): the text was checked")
    (tmp_path / "table.tex").write_text(text)
    (tmp_path / "doc.tex").write_text(LATEX_DOCUMENT)
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "doc.pdf").exists() and "Unicode character" not in done.stdout


def test_the_table_says_what_each_trick_changed(tmp_path):
    """``+swa`` at a small peak LR: the table says where SWA started and at which LR, from the configs
    (an older cifar-hpc's config, with an absolute swa_lrs, says what that run did)."""
    from cifar_hpc.config.train_config import TrainConfig
    from cifar_hpc.report.display import list_lines

    root = tmp_path / "swa"
    entries = []
    configs = {
        "baseline": {"epochs": 10, "optim": {"lr": 4e-3}},
        "+swa": {"epochs": 10, "optim": {"lr": 4e-3}, "tricks": {"swa": True}},
        "+old-swa": {"epochs": 10, "optim": {"lr": 4e-3}, "tricks": {"swa": True, "swa_lrs": 0.01}},
    }
    for cell, sections in configs.items():
        for seed in (0, 1):
            result = make_result("resnet18", cell, seed, 0.5 + seed / 100, grid="swa")
            result["run_id"] = run_id = f"{cell.strip('+')}{seed}"
            result["config"] = TrainConfig.from_dict({**sections, "seed": seed, "cell": cell, "grid": "swa"}).to_dict()
            write_json_atomic(root / run_id / "result.json", result | {"test_images": 100})
            entries.append({"run_id": run_id, "cell": cell, "model": "resnet18", "seed": seed})
    write_json_atomic(root / "study.json", {"schema": 1, "grid": "swa", "baseline_cell": "baseline", "runs": entries})
    summary = collect_(root)
    sections = dict(list_lines(summary))
    assert sorted(sections["What the tricks changed, as configured (2)"]) == [  # in the table's row order
        "+old-swa: swa: SWA from epoch 7 of 10 at swa_lrs 0.01 (2.5 x the peak LR 0.004); "
        "the main onecycle schedule spans the 7 epochs before",
        "+swa: swa: SWA from epoch 7 of 10 at 0.2 x the peak LR (0.0008); "
        "the main onecycle schedule spans the 7 epochs before",
    ]
    assert summary.to_dict()["tricks"] == sections["What the tricks changed, as configured (2)"]
    assert "SWA from epoch 7 of 10 at 0.2 x the peak LR (0.0008)" in render.render(summary, "md")
