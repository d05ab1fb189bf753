"""What every command line tool is expected to have: -h, --version, shell completion."""

from __future__ import annotations

import pytest
from conftest import run_cli

from cifar_hpc.cli import package_version


@pytest.mark.parametrize(
    "command", [[], ["submit"], ["data", "synth"]], ids=" ".join
)  # the app, a command, a subcommand
def test_dash_h_is_help_on_every_command(command, capsys):
    short = run_cli([*command, "-h"], capsys)
    assert short.code == 0 and "Usage:" in short.out
    assert short.out == run_cli([*command, "--help"], capsys).out


def test_version(capsys):
    result = run_cli(["--version"], capsys)
    assert result.code == 0
    assert result.out == f"cifar-hpc {package_version()}\n"
    assert package_version()[0].isdigit()


def test_shell_completion_is_offered(capsys):
    result = run_cli(["--help"], capsys)
    assert "--install-completion" in result.out and "--show-completion" in result.out
