"""The code each run trained with: ``submit`` records the study's code version, each run the one it
imported, and a run whose code differs from its submission's is flagged in ``status --runs``,
``collect`` (a row mixing code versions is marked like a confounded comparison) and the report;
``submit`` says so before adding to a study whose code changed. The real case (slurm, slow): the
checkout is edited between submit and run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import read_json, run_cli, write_grid
from test_collect import make_study, run_id_of

import cifar_hpc
from cifar_hpc.base import code_identity
from cifar_hpc.cluster.profiles import parse_profile
from cifar_hpc.study import code_snapshot, code_version
from cifar_hpc.study.grid import expand, load_grid
from cifar_hpc.study.manifest import JobRecord, record_job, record_submission
from cifar_hpc.submit.executors import SlurmArrays
from cifar_hpc.submit.launch import place_runs
from cifar_hpc.training.results import write_json_atomic

REPO = Path(__file__).resolve().parents[1]
GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.org",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.org",
}


def checkout(folder: Path) -> Path:
    """A git checkout holding a copy of the package, committed: what a user submits from. Returns its root."""
    shutil.copytree(Path(cifar_hpc.__file__).parent, folder / "cifar_hpc", ignore=shutil.ignore_patterns("__pycache__"))
    (folder / ".gitignore").write_text("__pycache__/\n")
    env = {**os.environ, **GIT_ENV}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "code"]):
        subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, env=env)
    return folder


def edit(package: Path) -> None:
    """An edit of the checkout, as a user makes one while a study is queued."""
    path = package / "training" / "train.py"
    path.write_text(path.read_text() + "\n# edited while the study was queued\n")


@pytest.mark.skipif(shutil.which("git") is None, reason="no git")
def test_the_code_version_is_the_commit_plus_a_hash_of_what_changed(tmp_path):
    package = checkout(tmp_path / "repo") / "cifar_hpc"
    clean = code_identity.current(package)
    head = subprocess.run(["git", "-C", str(package), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert clean["commit"] == head.strip() and clean["changes"] is None and clean["label"] == head[:7]
    assert clean["id"] == code_identity.current(Path(cifar_hpc.__file__).parent)["id"]  # same files, same id
    edit(package)
    edited = code_identity.current(package)
    assert edited["id"] != clean["id"] and edited["commit"] == clean["commit"] and edited["changes"]
    assert edited["label"] == f"{head[:7]}+changes {edited['changes']}"
    (package / "extra.py").write_text("X = 1\n")  # an untracked module is imported code too
    more = code_identity.current(package)
    assert more["changes"] != edited["changes"] and more["id"] != edited["id"]
    copy = tmp_path / "installed" / "cifar_hpc"  # a wheel's copy: no checkout, the version and the source hash
    shutil.copytree(package, copy)
    installed = code_identity.current(copy)
    assert installed["commit"] is None and installed["id"] == more["id"]
    assert installed["label"] == f"{cifar_hpc.__version__} (source {more['id']})"


def test_each_job_carries_its_submissions_code_once(tmp_path):
    """record_submission records the code; the local executor's early record_job and the later
    record of the same job give one entry, with that code."""
    runs = [{"run_id": "a", "cell": "baseline", "model": "resnet18", "seed": 0}]
    record_submission(tmp_path, grid="g", baseline_cell="baseline", runs=runs, jobs=[], description="why")
    job = JobRecord(run_ids=("a",), submitted_at="2026-01-01T00:00:00+00:00", executor="local", host="h", pid=1)
    record_job(tmp_path, job)
    record_submission(tmp_path, grid="g", baseline_cell="baseline", runs=(), jobs=[job])
    manifest = read_json(tmp_path / "study.json")
    assert manifest["code"] == code_identity.current() and manifest["description"] == "why"
    assert len(manifest["jobs"]) == 1 and manifest["jobs"][0]["code"] == manifest["code"]


CODE_A = {"id": "aaaaaaaaaaaa", "commit": "a" * 40, "changes": None, "version": "0.1.0", "label": "aaaaaaa"}
CODE_B = {**CODE_A, "id": "bbbbbbbbbbbb", "changes": "bbbbbbbbbbbb", "label": "aaaaaaa+changes bbbbbbbbbbbb"}


def stamped_study(root: Path) -> tuple[Path, str]:
    """collect's fixed study submitted at CODE_A; every result trained CODE_A but one +swa run, CODE_B."""
    make_study(root)
    manifest = read_json(root / "study.json")
    manifest["code"] = CODE_A
    for job in manifest["jobs"]:
        job["code"] = CODE_A
    write_json_atomic(root / "study.json", manifest)
    changed = run_id_of("resnet18", "+swa", 1)
    for path in root.glob("*/result.json"):
        try:
            result = json.loads(path.read_text())
        except ValueError:
            continue
        result["code"] = CODE_B if path.parent.name == changed else CODE_A
        write_json_atomic(path, result)
    return root, changed


def test_a_run_whose_code_changed_is_flagged_everywhere(tmp_path, capsys):
    study, changed = stamped_study(tmp_path / "runs" / "ablation")
    status = run_cli(["status", study, "--runs"], capsys)
    flagged = [line for line in status.out.splitlines() if "CODE CHANGED" in line]
    assert flagged == [
        f"{changed} completed: CODE CHANGED: trained code {CODE_B['label']}, not its submission's aaaaaaa"
    ]
    table = run_cli(["collect", study, "-f", "md", "--no-slurm"], capsys)
    assert table.code == 0
    swa = next(line for line in table.out.splitlines() if line.startswith("| resnet18 | +swa "))
    assert "†" in swa  # the row mixes two code versions: marked like a confounded comparison
    assert "mixes code versions: aaaaaaa (5 runs), aaaaaaa+changes bbbbbbbbbbbb (1 run)" in table.out
    assert "1 run(s) trained other code than their submission's" in table.out and changed in table.out
    clean = next(line for line in table.out.splitlines() if line.startswith("| resnet18 | +clip "))
    assert "†" not in clean
    runs = run_cli(["collect", study, "--runs", "--no-slurm"], capsys).out.splitlines()
    header = runs[0].split(",")
    rows = {line.split(",")[1]: dict(zip(header, line.split(","))) for line in runs[1:]}
    assert rows[changed]["code_changed"] == "True" and rows[changed]["submitted_code"] == "aaaaaaa"
    assert rows[run_id_of("resnet18", "+swa", 0)]["code_changed"] == "False"
    report = run_cli(["report", study, "--no-slurm", "-o", tmp_path / "r.html"], capsys)
    text = (tmp_path / "r.html").read_text()
    assert report.code == 0 and f'class="state-completed code-changed" data-run="{changed}"' in text
    assert "runs whose code changed" in text


def test_submit_says_so_before_adding_to_a_study_whose_code_changed(tmp_path):
    record_submission(tmp_path, grid="g", baseline_cell="baseline", runs=[{"run_id": "a"}], jobs=[])
    assert code_version.submit_notes(tmp_path) == []  # the same code
    (note,) = code_version.submit_notes(tmp_path, now=CODE_B)
    assert note.startswith(
        f"code changed since this study's last submission: it was {code_identity.current()['label']}"
    )
    assert "it is aaaaaaa+changes bbbbbbbbbbbb now" in note
    assert code_version.submit_notes(tmp_path / "new") == []  # a new study: nothing to say


def _held_profile(folder: Path, *, code_snapshot: bool) -> Path:
    path = folder / f"held-{code_snapshot}.toml"
    lines = ["extra_sbatch = { hold = true }", f"code_snapshot = {str(code_snapshot).lower()}"]
    path.write_text((REPO / "slurm" / "profiles" / "test-cluster.toml").read_text() + "\n".join(lines) + "\n")
    return path


def test_a_snapshot_is_the_package_copied_once_per_code(tmp_path):
    """What a bare-metal submission's jobs import: the package's sources under the study, named by their id."""
    package = checkout(tmp_path / "repo") / "cifar_hpc"
    study = tmp_path / "runs" / "s"
    first = code_snapshot.snapshot_code(study, package)
    assert first == study / "code" / code_identity.source_id(package)
    assert code_identity.source_id(first / "cifar_hpc") == first.name and not list(first.rglob("__pycache__"))
    assert code_snapshot.snapshot_code(study, package) == first  # the same code: no second copy
    edit(package)
    second = code_snapshot.snapshot_code(study, package)
    assert second != first and second.name == code_identity.source_id(package)
    assert sorted(p.name for p in (study / "code").iterdir()) == sorted([first.name, second.name])  # no .part left
    line = code_snapshot.python_path_line(tmp_path / "it's")
    assert (
        subprocess.run(
            ["bash", "-c", f"{line}; echo $PYTHONPATH"], capture_output=True, text=True, env={"PYTHONPATH": "/x"}
        ).stdout
        == f"{tmp_path}/it's:/x\n"
    )


def test_bare_metal_jobs_import_the_snapshot_and_containers_their_image(tmp_path):
    """The jobs' script puts the submission's snapshot first on PYTHONPATH, on bare metal only."""
    runs = place_runs(expand(load_grid("smoke"), results_dir=tmp_path), parse_profile({}, name="p"))
    folder = tmp_path / "smoke"
    planned = f"export PYTHONPATH={folder}/code/{code_identity.source_id()}${{PYTHONPATH:+:$PYTHONPATH}}"
    for settings, expected in (
        ({}, True),
        ({"code_snapshot": False}, False),
        ({"runtime": "apptainer", "image": "/c/x.sif"}, False),
    ):
        profile = parse_profile({"time_min": 30, **settings}, name="p")
        arrays = SlurmArrays(profile, folder, "smoke", max_array_size=100)
        (batch,) = arrays.plan(runs)
        assert (planned in arrays.describe(batch, 0)) == expected, settings
    assert not (folder / "code").exists()  # describing (a dry run) writes nothing


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="no git")
def test_editing_the_checkout_between_submit_and_run(slurm_cluster, tmp_path, capsys):
    """A user submits two studies from a checkout (here a committed copy of the package, first on the
    jobs' path), their arrays wait, the checkout is edited, then the second run of each starts. The
    study submitted with the default code snapshot trains the submitted code in both runs; the one
    with ``code_snapshot = false`` imports the edited code in its second run, says so in its result,
    and status, collect, the report and the next submit all show it."""
    repo = checkout(tmp_path / "repo")
    env = {**os.environ, "PYTHONPATH": str(repo)}
    cells = '[[cells]]\nname = "baseline"\n[[cells]]\nname = "+flip"\nset = { augment = { flip = true } }\n'
    submitted = code_identity.current(repo / "cifar_hpc")
    studies, tasks, jobs = {}, {}, []
    for snapshot in (True, False):
        name = "frozen" if snapshot else "codeedit"
        grid = write_grid(tmp_path, name, cells)
        submit = [sys.executable, "-m", "cifar_hpc", "submit", "--grid", str(grid), "--profile"]
        submit.append(str(_held_profile(tmp_path, code_snapshot=snapshot)))
        done = subprocess.run(submit, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        study = studies[snapshot] = tmp_path / "runs" / name
        manifest = read_json(study / "study.json")
        job = JobRecord.from_dict(manifest["jobs"][0])
        jobs.append(job)
        assert manifest["code"]["id"] == job.code["id"] == submitted["id"]
        assert (study / "code").exists() == snapshot
        for i in range(2):
            run = manifest["runs"][i]
            tasks[snapshot, run["cell"]] = job.slurm_id(job.run_ids.index(run["run_id"]))
    try:
        for cell in ("baseline", "+flip"):
            if cell == "+flip":
                edit(repo / "cifar_hpc")
            for snapshot in (True, False):
                subprocess.run(
                    ["scontrol", "release", tasks[snapshot, cell]], check=True, capture_output=True, timeout=30
                )
            for snapshot in (True, False):
                assert slurm_cluster.wait_job(tasks[snapshot, cell], timeout_s=400) == "COMPLETED"
    finally:
        for job in jobs:
            subprocess.run(["scancel", str(job.job_id)], capture_output=True, timeout=30)

    frozen = {r["config"]["cell"]: r for r in map(read_json, studies[True].glob("*/result.json"))}
    assert {cell: r["code"]["id"] for cell, r in frozen.items()} == {
        "baseline": submitted["id"],
        "+flip": submitted["id"],
    }
    assert "CODE CHANGED" not in run_cli(["status", studies[True], "--runs"], capsys).out

    study = studies[False]
    results = {r["config"]["cell"]: r for r in map(read_json, study.glob("*/result.json"))}
    assert results["baseline"]["code"]["id"] == submitted["id"]
    assert results["+flip"]["code"]["id"] == code_identity.current(repo / "cifar_hpc")["id"] != submitted["id"]
    assert results["+flip"]["code"]["label"].startswith(submitted["label"] + "+changes ")
    status = run_cli(["status", study, "--runs"], capsys)
    assert [line.split()[0] for line in status.out.splitlines() if "CODE CHANGED" in line] == [
        results["+flip"]["run_id"]
    ]
    table = run_cli(["collect", study, "-f", "md"], capsys)
    assert "| +flip | baseline |" in table.out and "mixes code versions" in table.out
    again = subprocess.run([*submit, "--dry-run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert "code changed since this study's last submission" in again.stdout, again.stdout + again.stderr
    report = run_cli(["report", study, "-o", tmp_path / "report.html"], capsys)
    assert report.code == 0
    if shutil.which("chromium"):  # the report of a real study, in the browser
        from test_report import open_in_chromium

        page = open_in_chromium(tmp_path / "report.html", tmp_path)
        assert len(page.tables["comparison"]) == 3 and page.banner.startswith("GENERATED DATA")
        assert len([i for i in page.ids if i.startswith("curves-curve-val_acc-")]) == 2
