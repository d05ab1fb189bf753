"""What a run prints: one progress line per epoch outside a terminal, and a quiet console (each of
Lightning's lines once, no W&B banner, no known-harmless library warnings) unless ``-v``.

Trained on generated data: the accuracies here say nothing about CIFAR-10.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import sys
import warnings
from collections import Counter

import pytest
from conftest import read_json, run_cli, run_console_script

from cifar_hpc.base import console
from cifar_hpc.training.progress import progress_line

TINY_TRAIN = ["--epochs", "2", "--batch-size", "12", "--num-workers", "0", "--no-stage", "--wandb-mode", "offline"]
PROGRESS = re.compile(
    r"^INFO cifar_hpc\.training\.progress: epoch (?P<epoch>\d+)/2 run (?P<run>[0-9a-f]{12})(?P<swa> \(SWA batch-norm pass\))?: "
    r"train_loss (?P<loss>\d+\.\d{3}) train_acc (?P<train_acc>[\d.]+)% val_acc (?P<val_acc>[\d.]+)% "
    r"lr (?P<lr>\S+) img/s (?P<img>\d+) elapsed (?P<elapsed>\d+:\d\d:\d\d)$"
)
HIDDEN_WARNINGS = ("`srun` command is available", "LeafSpec", "SWA is currently only supported every epoch")


@pytest.fixture
def wandb_talks(monkeypatch):
    """W&B as a user has it: not silenced by the test set-up (conftest sets WANDB_SILENT), no
    verbosity or W&B settings left over from another test."""
    for name in ("WANDB_SILENT", "WANDB_QUIET", "WANDB_SHOW_INFO", console.VERBOSE_ENV):
        monkeypatch.delenv(name, raising=False)


def test_progress_line_says_epoch_run_loss_accuracies_lr_speed_and_time() -> None:
    record = {
        "run_id": "1a2b3c4d5e6f",
        "epoch": 3,
        "epochs": 10,
        "train_loss": 1.23449,
        "train_acc": 0.5671,
        "val_acc": 0.551,
        "best_val_acc": 0.6,
        "lr": 0.012345,
        "img_per_s": 1234.4,
        "elapsed_s": 83.2,
        "updated_at": "2026-12-01T10:00:00+00:00",
    }
    assert progress_line(record) == (
        "epoch 3/10 run 1a2b3c4d5e6f: train_loss 1.234 train_acc 56.7% val_acc 55.1% lr 0.0123 img/s 1234 elapsed 0:01:23"
    )
    unknown = {**record, "val_acc": None, "img_per_s": None, "swa": True}
    assert progress_line(unknown).startswith("epoch 3/10 run 1a2b3c4d5e6f (SWA batch-norm pass): train_loss 1.234")
    assert "val_acc - " in progress_line(unknown) and "img/s - " in progress_line(unknown)


@pytest.mark.slow
def test_outside_a_terminal_one_line_per_epoch_and_a_quiet_console(tiny_data, tmp_path, wandb_talks) -> None:
    """A real process whose stderr is a pipe, as in a Slurm log: Lightning's own handler and the
    warnings module write to the real stderr, which an in-process capture would not see."""
    out = tmp_path / "run"
    proc = run_console_script(
        ["train", "--data-dir", tiny_data, "--out", out, "--swa", "--lr-find", *TINY_TRAIN], cwd=tmp_path, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()

    progress = [match for match in map(PROGRESS.match, lines) if match]
    # two epochs, then SWA's batch-norm pass over the averaged weights, reported as the last epoch again
    assert [(m["epoch"], bool(m["swa"])) for m in progress] == [("1", False), ("2", False), ("2", True)], lines
    result = read_json(out / "result.json")
    saved = read_json(out / "progress.json")
    last = progress[-1]
    assert saved["run_id"] == last["run"] == result["run_id"]
    assert (saved["epoch"], saved["epochs"]) == (2, 2)
    assert f"{100 * saved['val_acc']:.1f}" == last["val_acc"] and f"{saved['train_loss']:.3f}" == last["loss"]
    assert saved["best_val_acc"] == pytest.approx(result["best_val_acc"], abs=1e-6)
    assert saved["img_per_s"] > 0 and saved["elapsed_s"] > 0 and saved["updated_at"].endswith("+00:00")

    assert not [line for line in lines if line.startswith("wandb:")], "W&B printed its banner"
    assert "Finding best initial lr" not in proc.stderr  # the LR finder's own tqdm bar, outside a terminal
    assert not [line for line in lines if line.startswith("INFO: ")], "Lightning's own handler printed"
    repeated = [line for line, n in Counter(lines).items() if n > 1 and line.strip()]
    assert not repeated, f"printed more than once: {repeated}"
    assert not [line for line in lines if "GPU available" in line or "`Trainer.fit` stopped" in line]
    assert not [line for line in lines if any(text in line for text in HIDDEN_WARNINGS)], lines


@pytest.mark.slow
def test_verbose_shows_lightning_and_wandb_again(tiny_data, tmp_path, capsys, wandb_talks) -> None:
    out = tmp_path / "run"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        result = run_cli(
            ["-v", "train", "--data-dir", tiny_data, "--out", out, *TINY_TRAIN[2:], "--epochs", "1"], capsys
        )
    assert result.code == 0, result.err[-3000:]
    shown = [str(w.message) for w in seen]
    assert any("LeafSpec" in text for text in shown), shown  # hidden by default (test above), back with -v
    if shutil.which("srun") and "SLURM_NTASKS" not in os.environ:  # where Lightning gives its srun hint
        assert any("`srun` command is available" in text for text in shown), shown
    assert "GPU available" in result.err and "`Trainer.fit` stopped" in result.err
    assert "wandb: Tracking run with wandb version" in result.err
    assert re.search(
        r"^INFO cifar_hpc\.training\.progress: epoch 1/1 run ", result.err, re.M
    )  # pytest's stderr is no tty
    assert not any(console._is_ours(entry) for entry in warnings.filters)


@pytest.mark.parametrize(("message", "module"), console.HARMLESS_WARNINGS, ids=lambda text: text[:20])
def test_harmless_warnings_are_filtered_where_raised_and_shown_with_verbose(message, module, monkeypatch) -> None:
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    # the real messages, as the libraries word them
    samples = {
        "The `srun`": "The `srun` command is available on your system but is not used. HINT: ...",
        "`isinstance\\(": "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)` instead.",
        "SWA is curr": "SWA is currently only supported every epoch. Found LRSchedulerConfig(interval='step')",
        "Checkpoint d": "Checkpoint directory /runs/x/checkpoints exists and is not empty.",
    }
    text = next(sample for prefix, sample in samples.items() if message.startswith(prefix))
    module_name = module.replace("\\", "")

    def raised() -> list[warnings.WarningMessage]:
        with warnings.catch_warnings(record=True) as seen:
            console.configure(verbose)
            warnings.warn_explicit(text, UserWarning, "lib.py", 1, module=module_name, registry={})
            warnings.warn_explicit(text, UserWarning, "ours.py", 1, module="cifar_hpc.training.train", registry={})
        return seen

    verbose = False
    assert [w.filename for w in raised()] == ["ours.py"]  # the same words from elsewhere still show
    verbose = True
    assert [w.filename for w in raised()] == ["lib.py", "ours.py"]
    console.configure(False)


def test_lightning_lines_go_through_one_handler(capsys, monkeypatch) -> None:
    """Lightning attaches its own stderr handler on import; ours prints its lines once, and its
    start-up chatter only with -v."""
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    lightning = logging.getLogger("lightning")
    stray = logging.StreamHandler(sys.stderr)
    lightning.addHandler(stray)  # as `import lightning` does
    try:
        console.configure(False)
        assert stray not in lightning.handlers
        rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
        rank_zero.info("GPU available: False, used: False")
        rank_zero.info(
            "💡 Tip: For seamless cloud logging, try installing [litlogger](https://pypi.org/project/litlogger/)"
        )
        rank_zero.info("Learning rate set to 0.01")
        err = capsys.readouterr().err
        assert err == "INFO lightning.pytorch.utilities.rank_zero: Learning rate set to 0.01\n"
        run_log = console.attach(logging.StreamHandler(io.StringIO()))  # a run's own log file, say
        rank_zero.info("GPU available: False, used: False")
        rank_zero.info("Learning rate set to 0.02")
        logging.getLogger().removeHandler(run_log)
        assert run_log.stream.getvalue() == "INFO lightning.pytorch.utilities.rank_zero: Learning rate set to 0.02\n"
        capsys.readouterr()
        console.configure(True)
        rank_zero.info("GPU available: False, used: False")
        rank_zero.info(
            "💡 Tip: For seamless cloud logging, try installing [litlogger](https://pypi.org/project/litlogger/)"
        )
        assert (
            capsys.readouterr().err == "INFO lightning.pytorch.utilities.rank_zero: GPU available: False, used: False\n"
        )
    finally:
        lightning.removeHandler(stray)
        console.configure(False)
