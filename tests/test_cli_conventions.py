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


def _commands(group, path=()):
    """Every visible command of the CLI, as the words that call it."""
    for name, command in group.commands.items():
        if command.hidden:
            continue
        if hasattr(command, "commands"):  # a group (Typer carries its own copy of click)
            yield from _commands(command, (*path, name))
        else:
            yield [*path, name]


def test_every_command_shows_an_example_that_it_accepts_and_its_defaults(capsys):
    import shlex

    import typer

    from cifar_hpc.cli import EXAMPLES, _register, app

    _register()
    root = typer.main.get_command(app)
    commands = list(_commands(root))
    assert len(commands) >= 12 and sorted(" ".join(words) for words in commands) == sorted(EXAMPLES)
    for words in commands:
        shown = " ".join(run_cli([*words, "--help"], capsys).out.replace("│", " ").split())
        example = EXAMPLES[" ".join(words)]
        assert f"Example: {example}" in shown, words
        command = root
        for word in words:
            command = command.commands[word]
        args = shlex.split(example)[1 + len(words) :]
        command.make_context(" ".join(words), args)  # parses as given: no unknown option, no bad value
    for words, default in (
        (["submit"], "[default: test-cluster]"),
        (["train"], "default: 10)"),
        (["status"], "[default: runs]"),
    ):
        assert default in " ".join(run_cli([*words, "--help"], capsys).out.replace("│", " ").split()), words
