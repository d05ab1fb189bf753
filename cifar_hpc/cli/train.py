"""Train one run of the seed recipe and write <out>/result.json.

Settings come from, in order (later wins): the dataclass defaults, a --config file (TOML or JSON,
e.g. a run's config.json) or --from-run RUN_ID (that run's config.json, found under --results-dir),
the flags below, and --set key=value for any setting.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from cifar_hpc.base.errors import Interrupted, UserError
from cifar_hpc.config.resolve import own_folder, resolve
from cifar_hpc.config.settings import field_docs
from cifar_hpc.config.train_config import TrainConfig

_RECIPE = "Recipe"
_TRICKS = "Augmentation and tricks"
_DATA = "Data"
_RUN = "Devices and output"
_CONFIG = "Configuration"

# Each flag (by its parameter's name) and the setting it sets; every other setting is reached with --set.
_KEYS = {
    "model": "model",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "seed": "seed",
    "optimizer": "optim.name",
    "lr": "optim.lr",
    "schedule": "optim.schedule",
    "precision": "precision",
    "crop": "augment.crop",
    "flip": "augment.flip",
    "rotate": "augment.rotate",
    "lr_find": "tricks.lr_find",
    "swa": "tricks.swa",
    "clip": "tricks.clip",
    "early_stop": "tricks.early_stop",
    "accumulate": "tricks.accumulate",
    "data_dir": "data.dir",
    "loader": "data.loader",
    "num_workers": "data.num_workers",
    "stage": "data.stage",
    "accelerator": "accelerator",
    "devices": "devices",
    "num_nodes": "num_nodes",
    "compile": "compile",
    "out": "out_dir",
    "wandb_mode": "wandb.mode",
    "wandb_group": "wandb.group",
}


def _field(key: str) -> tuple[type, str]:
    """The dataclass that holds a dotted setting, and the field's name in it."""
    cls: type = TrainConfig
    *sections, name = key.split(".")
    for section in sections:
        cls = typing.get_type_hints(cls)[section]
    return cls, name


_DEFAULTS = TrainConfig()


def _help(key: str) -> str:
    """A flag's help: the field's docstring and default, read from the dataclass (one source)."""
    cls, name = _field(key)
    default: Any = _DEFAULTS
    for part in key.split("."):
        default = getattr(default, part)
    if isinstance(default, bool):
        default = "on" if default else "off"
    elif default is None or default == ():
        default = "none" if default is None else "off"
    doc = field_docs(cls).get(name, "").replace("``", "`")
    return f"{doc} ({key}, default: {default})"


def _option(key: str, panel: str, *names: str) -> Any:
    cls, name = _field(key)
    hint = typing.get_type_hints(cls)[name]
    choices = "|".join(typing.get_args(hint)) if typing.get_origin(hint) is typing.Literal else None
    return typer.Option(*names, help=_help(key), metavar=choices, rich_help_panel=panel, show_default=False)


def train(
    config: Annotated[
        Optional[Path],
        typer.Option(
            help="TOML or JSON file of settings (same keys as a run's config.json); flags override it.",
            rich_help_panel=_CONFIG,
        ),
    ] = None,
    set_: Annotated[
        Optional[list[str]],
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Any setting by its dotted key, e.g. --set optim.weight_decay=1e-4 --set augment.normalize=false; the value is read as TOML (a bare word is a string). Applied last; repeatable.",
            rich_help_panel=_CONFIG,
        ),
    ] = None,
    from_run: Annotated[
        Optional[str],
        typer.Option(
            metavar="RUN_ID",
            help="Reproduce a run: its config.json, found by run id, unique prefix or STUDY/ID under --results-dir. "
            "Without flags it is that very run (resumed; a completed one is said and left alone); flags and --set "
            "make a variant, with its own id, in the run's study (<study>/<new id>/, recorded in its study.json, "
            "cell <cell>+<what changed>) unless --out.",
            rich_help_panel=_CONFIG,
        ),
    ] = None,
    results_dir: Annotated[
        Path,
        typer.Option(
            help="Where --from-run looks for runs (RESULTS_DIR/<grid>/<run_id>/ or RESULTS_DIR/<run_id>/).",
            rich_help_panel=_CONFIG,
        ),
    ] = Path("runs"),
    print_config: Annotated[
        bool,
        typer.Option(
            "--print-config",
            help="Print the resolved settings as JSON (with the run id) and exit without training.",
            rich_help_panel=_CONFIG,
        ),
    ] = False,
    model: Annotated[Optional[str], _option("model", _RECIPE)] = None,
    epochs: Annotated[Optional[int], _option("epochs", _RECIPE)] = None,
    batch_size: Annotated[Optional[int], _option("batch_size", _RECIPE)] = None,
    seed: Annotated[Optional[int], _option("seed", _RECIPE)] = None,
    optimizer: Annotated[Optional[str], _option("optim.name", _RECIPE)] = None,
    lr: Annotated[Optional[float], _option("optim.lr", _RECIPE)] = None,
    schedule: Annotated[Optional[str], _option("optim.schedule", _RECIPE)] = None,
    precision: Annotated[Optional[str], _option("precision", _RECIPE)] = None,
    crop: Annotated[Optional[bool], _option("augment.crop", _TRICKS, "--crop/--no-crop")] = None,
    flip: Annotated[Optional[bool], _option("augment.flip", _TRICKS, "--flip/--no-flip")] = None,
    rotate: Annotated[Optional[bool], _option("augment.rotate", _TRICKS, "--rotate/--no-rotate")] = None,
    lr_find: Annotated[Optional[bool], _option("tricks.lr_find", _TRICKS, "--lr-find/--no-lr-find")] = None,
    swa: Annotated[Optional[bool], _option("tricks.swa", _TRICKS, "--swa/--no-swa")] = None,
    clip: Annotated[Optional[bool], _option("tricks.clip", _TRICKS, "--clip/--no-clip")] = None,
    early_stop: Annotated[Optional[bool], _option("tricks.early_stop", _TRICKS, "--early-stop/--no-early-stop")] = None,
    accumulate: Annotated[Optional[str], _option("tricks.accumulate", _TRICKS)] = None,
    data_dir: Annotated[Optional[str], _option("data.dir", _DATA)] = None,
    loader: Annotated[Optional[str], _option("data.loader", _DATA)] = None,
    num_workers: Annotated[Optional[int], _option("data.num_workers", _DATA)] = None,
    stage: Annotated[Optional[bool], _option("data.stage", _DATA, "--stage/--no-stage")] = None,
    accelerator: Annotated[Optional[str], _option("accelerator", _RUN)] = None,
    devices: Annotated[Optional[str], _option("devices", _RUN)] = None,
    num_nodes: Annotated[Optional[int], _option("num_nodes", _RUN)] = None,
    compile: Annotated[Optional[bool], _option("compile", _RUN, "--compile/--no-compile")] = None,
    out: Annotated[Optional[str], _option("out_dir", _RUN)] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace another run found in the output folder (deleting it); without it such a folder is refused.",
            rich_help_panel=_RUN,
        ),
    ] = False,
    wandb_mode: Annotated[Optional[str], _option("wandb.mode", _RUN)] = None,
    wandb_group: Annotated[Optional[str], _option("wandb.group", _RUN)] = None,
) -> None:
    """Train one run of the seed recipe and write <out>/result.json."""
    given = {_KEYS[name]: value for name, value in locals().items() if name in _KEYS and value is not None}
    found, entry = None, None
    if from_run is not None:
        if config is not None:
            raise UserError("give --config or --from-run, not both")
        from cifar_hpc.training.results import CONFIG_FILE

        found = find_from_run(results_dir, from_run)
        config = found[0].root / found[1].run_id / CONFIG_FILE
        if not (given or set_ or overwrite or print_config) and _said_completed(*found, results_dir):
            return  # before torch is imported: asking again for a finished run costs nothing
    cfg = resolve(config, given, set_ or [])
    if not print_config:
        import cifar_hpc.training.train  # noqa: F401  torch and Lightning before the fingerprint: timing.imports_s is theirs
    cfg = _fingerprinted(cfg, required=not print_config)
    if found is not None:
        cfg, entry = _as_variant(cfg, config, *found, results_dir, out_given=out is not None)
    if print_config:
        typer.echo(json.dumps({"run_id": cfg.run_id, **cfg.to_dict()}, indent=2))
        return
    if entry is not None:
        _record_variant(found[0], entry, results_dir)
    _train(cfg, overwrite=overwrite, log=entry is not None)


def _fingerprinted(cfg: TrainConfig, *, required: bool) -> TrainConfig:
    """``cfg`` with its data's fingerprint (part of the run id). Not ``required`` (``--print-config``:
    settings can be shown before the data exists), a missing one is a note on stderr."""
    from cifar_hpc.data.fingerprint import with_fingerprint

    try:
        return with_fingerprint(cfg)
    except UserError as missing:
        if required:
            raise
        typer.echo(f"note: {missing}; the run id will include the data's fingerprint", err=True)
        return cfg


def _train(cfg: TrainConfig, *, overwrite: bool, log: bool = False) -> None:
    """Train ``cfg`` and say how it went: its test accuracy, or why it failed (exit 1). ``log``: into
    the run's ``train.log`` too, as a run of a local submit (where ``logs`` reads it)."""
    import os

    from cifar_hpc.study.run_logs import capture, local_log
    from cifar_hpc.training.results import RESULT_FILE
    from cifar_hpc.training.run_folder import output_dir
    from cifar_hpc.training.train import run

    try:
        if log:
            with capture(local_log(output_dir(cfg))) as note:
                note(f"--- {cfg.run_id}: an attempt starts (train --from-run, pid {os.getpid()}) ---")
                result = run(cfg, overwrite=overwrite)
        else:
            result = run(cfg, overwrite=overwrite)
    except KeyboardInterrupt:  # before training began (loading data); during it, run() raises Interrupted
        raise Interrupted(
            f"interrupted by Ctrl-C before training began; run the same command again to start {cfg.run_id}"
        ) from None
    where = output_dir(cfg) / RESULT_FILE
    if result["status"] != "completed":
        typer.echo(f"run {cfg.run_id} FAILED: {result['error']} (details in {where})", err=True)
        raise typer.Exit(1)
    label = " [GENERATED data, not CIFAR-10]" if result["data"] == "generated" else ""
    typer.echo(f"run {cfg.run_id}: test_acc={result['test_acc']:.4f}{label}")
    typer.echo(f"result: {where}")


def find_from_run(results_dir: Path, ref: str) -> tuple[Any, Any]:
    """The study and run ``--from-run`` names (an id, its start, or STUDY/ID: the rules are
    ``cifar_hpc.study.run_lookup.find_run``'s), refused unless it has a ``config.json``."""
    from cifar_hpc.study.run_lookup import find_run
    from cifar_hpc.training.results import CONFIG_FILE

    prefix = ref.strip().lower().rpartition("/")[2]
    if not prefix or not all(c in "0123456789abcdef" for c in prefix):
        raise UserError(f"--from-run {ref!r}: a run id is hexadecimal, e.g. 3f2a9c01b7de (or its first characters)")
    try:
        study, run = find_run(results_dir, ref.strip().lower())
    except UserError as error:
        raise UserError(f"--from-run {ref}: {error}") from None
    if not run.started:
        raise UserError(f"--from-run {ref}: run {run.run_id} has not started (no {CONFIG_FILE} in its folder)")
    return study, run


def _said_completed(study: Any, run: Any, results_dir: Path) -> bool:
    """Say that ``--from-run``'s run is completed (where, and how to train it again) and return True;
    False when it is not."""
    from cifar_hpc.study.run_lookup import study_label
    from cifar_hpc.study.run_state import RunState
    from cifar_hpc.training.results import RESULT_FILE

    if run.recorded is not RunState.COMPLETED:
        return False
    acc = (run.result or {}).get("test_acc")
    typer.echo(
        f"run {study_label(study.root, results_dir)}/{run.run_id} is already completed: test_acc={acc:.4f} "
        f"({study.root / run.run_id / RESULT_FILE}); --overwrite trains it again, a flag or --set KEY=VALUE "
        "trains a variant of it"
    )
    return True


def _as_variant(
    cfg: TrainConfig, config: Path, study: Any, run: Any, results_dir: Path, *, out_given: bool
) -> tuple[TrainConfig, dict[str, Any] | None]:
    """``--from-run`` with changes is a variant: another run in the original's study folder, its cell
    named after what it changes (``cifar_hpc.study.variants``). Returns the config and what study.json
    is to record of it (None: the same run, ``--out``, no study.json, or already completed there).
    A completed identical run in another study is said, then this one trains: results are their study's."""
    from cifar_hpc.config.resolve import read_config_file
    from cifar_hpc.study.recorded import cell_of, read_run
    from cifar_hpc.study.run_lookup import completed_elsewhere, study_label
    from cifar_hpc.study.run_state import RunState
    from cifar_hpc.study.variants import variant_cell, variant_entry

    cfg = own_folder(cfg, config, study.root.resolve(), out_given=out_given)  # absolute, as submit's runs
    if cfg.run_id == run.run_id:
        return cfg, None
    before = TrainConfig.from_dict(read_config_file(config))
    cfg = cfg.replace(cell=variant_cell(run.cell or cell_of(before.to_dict()), cfg, before))
    for where in completed_elsewhere(results_dir, [cfg.run_id], here=study.root).values():
        here = study_label(study.root, results_dir)
        typer.echo(f"note: run {cfg.run_id} is identical to completed run {where}; trained again in {here}", err=True)
    if out_given or not study.has_manifest or read_run(study.root / cfg.run_id)[0] is RunState.COMPLETED:
        return cfg, None
    return cfg, variant_entry(run, cfg, before)


def _record_variant(study: Any, entry: dict[str, Any], results_dir: Path) -> None:
    from cifar_hpc.study.run_lookup import study_label
    from cifar_hpc.study.variants import record_variant
    from cifar_hpc.submit.launch import study_lock

    with study_lock(study.root, say=lambda line: typer.echo(line, err=True)):
        record_variant(study, entry)
    label = study_label(study.root, results_dir)
    typer.echo(f"variant {entry['cell']} ({entry['run_id']}): trains in study {label}, recorded in its study.json")
