"""Time limits that cannot work are refused before anything is submitted, and the number of time
slices a run may use reaches the job (issue 9, defect 6).

The rules (``cifar_hpc.cluster.profiles.check_time_limit``): each attempt gets ``time_min`` minutes, of which
the requeue signal's lead time, Slurm's signal jitter (60 s) and start-up (120 s) are lost, and at least
180 s must be left to train; and submitit must count the time limit's USR2 as a timeout, so that
``max_timeouts`` (submitit's ``max_num_timeout``) bounds the attempts of a run that never fits.
"""

from __future__ import annotations

import subprocess

import pytest
import submitit
from conftest import run_cli, write_grid

from cifar_hpc.base.errors import UserError
from cifar_hpc.cluster.profiles import Profile, Resources, load_profile, min_time_min, out_of_time_note, parse_profile
from cifar_hpc.submit.batch import Batch
from cifar_hpc.submit.executors import SlurmArrays, sbatch_text

LOCAL = {"partition": "debug", "gpus_per_node": 0, "cpus_per_task": 1, "mem_gb": 1, "time_min": 30}


def test_the_shortest_limit_leaves_three_minutes_of_training_after_the_signal():
    # 90 s signal + 60 s jitter + 120 s start-up + 180 s training = 450 s: 7.5 min, so 8
    assert min_time_min(90) == 8
    assert min_time_min(0) == 6 and min_time_min(300) == 11
    assert Profile(resources=Resources(time_min=8)).resources.time_min == 8
    with pytest.raises(UserError, match=r"time_min 7 is too short: .*signal_delay_s 90 s .* use time_min >= 8"):
        Profile(resources=Resources(time_min=7))
    with pytest.raises(UserError, match=r"time_min 10 is too short: .* use time_min >= 11"):
        Profile(resources=Resources(time_min=10), signal_delay_s=300)


def test_cli_time_limit_overrides_are_checked_like_the_file(tmp_path, capsys, monkeypatch):
    """The issue's command: `--time-min 1` with the 90 s signal. One line, exit 2, nothing written."""
    monkeypatch.chdir(tmp_path)
    grid = write_grid(tmp_path, "tiny", "")
    for value, message in (
        ("1", "time_min 1 is too short"),
        ("0", "time_min must be >= 1"),
        ("-3", "time_min must be >= 1"),
    ):
        result = run_cli(["submit", "--grid", grid, "--executor", "slurm", "--time-min", value, "--dry-run"], capsys)
        assert result.code == 2, result
        assert len(result.err.strip().splitlines()) == 1 and f"profile test-cluster: {message}" in result.err
        assert "#SBATCH" not in result.out
    result = run_cli(["submit", "--grid", grid, "--executor", "slurm", "--time-min", "1.5", "--dry-run"], capsys)
    # refused by the CLI's own int parsing (a usage error, exit 2), not truncated to 1
    assert result.code == 2 and "Invalid value for '--time-min'" in result.err and "integer" in result.err
    assert not (tmp_path / "runs").exists()


def test_fractional_limits_are_refused_even_from_code():
    with pytest.raises(UserError, match="time_min must be a whole number, got 1.5"):
        Resources(time_min=1.5)
    with pytest.raises(UserError, match="max_timeouts must be a whole number >= 0, got 2.5"):
        Profile(max_timeouts=2.5)


def test_a_signal_submitit_would_take_for_a_preemption_is_refused():
    # submitit counts a USR2 as a timeout only after min(80 %, limit - 10 min) of the attempt: for
    # 60 min that is 48 min, so a signal (plus 60 s of jitter) more than 12 min early is a "preemption"
    assert parse_profile({**LOCAL, "time_min": 60, "signal_delay_s": 660}, name="p").signal_delay_s == 660
    with pytest.raises(UserError, match=r"signal_delay_s 661 is too long for time_min 60: .*<= 660"):
        parse_profile({**LOCAL, "time_min": 60, "signal_delay_s": 661}, name="p")


def test_max_timeouts_reaches_submitit(tmp_path):
    """The profile's max_timeouts is submitit's max_num_timeout, for a plain job and for an array."""
    profile = parse_profile({**LOCAL, "max_timeouts": 7}, name="p")
    assert load_profile("test-cluster").max_timeouts == 3  # submitit's default, unchanged unless asked
    arrays = SlurmArrays(profile, tmp_path, "g")
    executor = arrays.executor(Batch((), profile.resources), 0)
    assert executor.max_num_timeout == 7
    assert "--time=30" in sbatch_text(executor, 3) and "--signal=USR2@90" in sbatch_text(executor, 3)


def test_out_of_time_note_says_what_to_raise():
    assert out_of_time_note(4, 3) == (
        "time limit reached after 4 attempts (max_timeouts 3: at most 4 time slices); "
        "raise time_min or max_timeouts in the profile"
    )
    assert out_of_time_note(None) == "time limit reached; raise time_min or max_timeouts in the profile"


@pytest.mark.slurm
def test_a_held_job_carries_the_time_limit_and_the_timeout_budget(slurm_cluster, tmp_path):
    """A real (held, then cancelled) submission: Slurm got the time limit, and the pickle every attempt
    of the job loads counts down from the profile's max_timeouts."""
    profile = parse_profile({**LOCAL, "time_min": 9, "max_timeouts": 6}, name="p")
    executor = SlurmArrays(profile, tmp_path, "held").executor(Batch((), profile.resources), 0)
    executor.update_parameters(additional_parameters={**executor.parameters["additional_parameters"], "hold": True})
    job = executor.submit(int, 1)
    try:
        shown = subprocess.run(
            ["scontrol", "show", "job", job.job_id], capture_output=True, text=True, timeout=30
        ).stdout
        assert "TimeLimit=00:09:00" in shown and "JobState=PENDING" in shown, shown
        delayed = submitit.core.utils.DelayedSubmission.load(job.paths.submitted_pickle)
        assert (delayed._timeout_min, delayed._timeout_countdown) == (9, 6)  # submitit's own fields: no public API
    finally:
        subprocess.run(["scancel", job.job_id], capture_output=True, timeout=30)
