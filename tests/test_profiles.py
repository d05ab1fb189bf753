"""Cluster profiles load like run configs: every value is checked against its type, and nothing that
would break (or inject into) the sbatch script gets through. One line, exit 2, nothing submitted."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from conftest import run_cli, write_grid

from cifar_hpc.base.errors import UserError
from cifar_hpc.cluster.profiles import Profile, Resources, load_profile, profile_dirs
from cifar_hpc.config.settings import field_docs

BAD = {
    "binds as a string": ('binds = "/data"', "setting binds has the wrong type"),
    "setup as a string": ('setup = "module load x"', "setting setup has the wrong type"),
    "nodes as a string": ('nodes = "2"', "setting nodes has the wrong type"),
    "mem_gb as a string": ('mem_gb = "3"', "setting mem_gb has the wrong type"),
    "gpus_per_node as a boolean": ("gpus_per_node = true", "setting gpus_per_node has the wrong type"),
    "extra_sbatch as a string": ('extra_sbatch = "x"', "extra_sbatch must be a table"),
    "models as a number": ("models = 3", "models must be a table"),
    "a model's table as a number": ("models = { resnet18 = 3 }", "[models.resnet18] must be a table"),
    "an unknown model": ("[models.resnet50]\ntime_min = 9", "unknown model 'resnet50'"),
    "an unknown key in a model table": ("[models.resnet34]\nimage = 'x'", "unknown setting models.resnet34.image"),
    "an unknown runtime": ('runtime = "singularity"', "unknown container runtime 'singularity'"),
    "an unknown key": ("partitoin = 'gpu'", "unknown setting partitoin"),
    "extra_sbatch key with a newline": ('extra_sbatch = { "x\\nhostname" = 1 }', "extra_sbatch key"),
    "extra_sbatch key with a space": ('extra_sbatch = { "mail type" = "END" }', "extra_sbatch key"),
    "extra_sbatch value with a newline": ('extra_sbatch = { comment = "a\\nhostname" }', "extra_sbatch.comment"),
    "extra_sbatch value as a table": (
        "extra_sbatch = { comment = { a = 1 } }",
        "setting extra_sbatch.comment has the wrong type",
    ),
    "extra_sbatch value false": ("extra_sbatch = { exclusive = false }", "extra_sbatch.exclusive"),
    "extra_sbatch key cifar-hpc sets": ('extra_sbatch = { time = "10:00" }', "use the profile's time_min"),
    "partition with a newline": ('partition = "gpu\\n#SBATCH --x"', "partition"),
    "account with a quote": ("account = 'my\"proj'", "account"),
    "qos with a space": ('qos = "a b"', "qos"),
    "constraint with a newline": ('constraint = "a100\\nhostname"', "constraint"),
    "image with a newline": ('runtime = "docker"\nimage = "img\\nrm -rf /"', "image"),
    "scratch with a newline": ('scratch = "/tmp\\nhostname"', "scratch"),
    "a bind with a comma": ('binds = ["/a,/b"]', "binds"),
    "a setup line that is not a string": ("setup = [true]", "setting setup[0] has the wrong type"),
    "a fractional time limit": ("time_min = 1.5", "setting time_min has the wrong type"),
    "a zero time limit": ("time_min = 0", "time_min must be >= 1"),
    "a negative time limit": ("time_min = -5", "time_min must be >= 1"),
    "a time limit no attempt can train in": ("time_min = 1", "time_min 1 is too short"),
    "a model's time limit too short": ("[models.resnet34]\ntime_min = 5", "models.resnet34.time_min 5 is too short"),
    "a negative max_timeouts": ("max_timeouts = -1", "max_timeouts must be a whole number >= 0"),
    "a fractional max_timeouts": ("max_timeouts = 2.5", "setting max_timeouts has the wrong type"),
}


def _write(tmp_path: Path, text: str, name: str = "bad") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text + "\n")
    return path


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_profile_values_are_one_line_user_errors(case, tmp_path):
    text, message = BAD[case]
    with pytest.raises(UserError) as error:
        load_profile(str(_write(tmp_path, text)))
    said = str(error.value)
    assert message in said and said.startswith("profile bad: ")
    assert "\n" not in said


@pytest.mark.parametrize("override", [{"account": 'x"y'}, {"partition": "gpu\nhostname"}, {"account": "a b"}])
def test_bad_cli_overrides_are_refused(override):
    with pytest.raises(UserError) as error:
        load_profile("test-cluster", override)
    assert "\n" not in str(error.value)


def test_profile_built_in_code_is_checked_too():
    with pytest.raises(UserError, match="partition"):
        Profile(partition="gpu\nhostname")
    with pytest.raises(UserError, match="extra_sbatch key"):
        Profile(extra_sbatch={"a\nb": 1})


def test_good_profile_is_typed(tmp_path):
    path = _write(
        tmp_path,
        """
partition = "gpu"
account = "proj-1"
constraint = "a100|h100"
gpus_per_node = 4
mem_gb = 64
runtime = "apptainer"
image = "/shared/c.sif"
binds = ["/shared/data"]
setup = ["module load apptainer"]
extra_sbatch = { exclusive = true, mail-type = "END,FAIL", gres-flags = "enforce-binding", nice = 10 }
[models.resnet34]
time_min = 240
""",
        name="gpu",
    )
    profile = load_profile(str(path), {"account": "other", "nodes": None})
    assert profile.name == "gpu" and profile.account == "other" and profile.runtime == "apptainer"
    assert profile.binds == ("/shared/data",) and profile.setup == ("module load apptainer",)
    assert profile.resources == Resources(gpus_per_node=4, mem_gb=64.0)
    assert profile.resources_for("resnet34") == Resources(gpus_per_node=4, mem_gb=64.0, time_min=240)
    assert profile.resources_for("resnet18") == profile.resources
    assert profile.extra_sbatch == {
        "exclusive": True,
        "mail-type": "END,FAIL",
        "gres-flags": "enforce-binding",
        "nice": 10,
    }


def test_shipped_profiles_load():
    names = sorted(p.stem for p in profile_dirs()[1].glob("*.toml"))
    assert "test-cluster" in names
    for name in names:
        load_profile(name)


def test_every_profile_field_is_documented():
    for cls in (Profile, Resources):
        assert set(field_docs(cls)) == {f.name for f in dataclasses.fields(cls)}, cls


def test_submit_refuses_a_bad_profile_before_anything(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid = write_grid(tmp_path, "tiny", "")
    bad = _write(tmp_path, 'extra_sbatch = { "x\\nhostname" = 1 }')
    result = run_cli(["submit", "--grid", grid, "--profile", bad, "--dry-run"], capsys)
    assert result.code == 2, result
    assert len(result.err.strip().splitlines()) == 1 and "extra_sbatch key" in result.err
    assert "#SBATCH" not in result.out and not (tmp_path / "runs").exists()
    result = run_cli(["submit", "--grid", grid, "--executor", "slurm", "--account", "a\nb", "--dry-run"], capsys)
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1 and "account" in result.err
