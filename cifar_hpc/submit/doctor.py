"""Preflight: what can be checked before spending GPU-hours, one line per check.

Each check is a small function returning a ``Check``; ``run_checks`` runs them all and never raises
for what it finds (a failing check is a finding, not a crash).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from cifar_hpc.base.errors import UserError
from cifar_hpc.base.words import counted
from cifar_hpc.cluster import slurm

SHARED_FILESYSTEMS = {"nfs", "nfs4", "lustre", "gpfs", "beegfs", "cephfs", "ceph", "fuse.glusterfs", "wekafs", "panfs"}


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str

    def line(self) -> str:
        return f"{self.status.upper():<4}  {self.name:<22} {self.detail}"


def check_slurm(runner: slurm.Runner = slurm.call) -> Check:
    if not slurm.available():
        return Check(
            "slurm", "fail", "sbatch not found: no Slurm here (cifar-hpc submit --executor local runs on this machine)"
        )
    try:
        slurm.ping(runner)  # a hung controller answers within slurm.TIMEOUT_S: a finding, not a crash
    except slurm.SlurmError as error:
        return Check("slurm", "fail", str(error))
    if not slurm.accounting_on(runner):
        return Check(
            "slurm",
            "warn",
            "controller up, but no accounting (sacct): a job killed outside Python shows as missing, not failed",
        )
    return Check("slurm", "ok", "controller up, accounting on")


def check_srun() -> Check:
    if shutil.which("srun") is None:
        return Check("srun", "fail", "srun not found: DDP needs one srun task per GPU")
    return Check("srun", "ok", shutil.which("srun") or "")


def check_partition(profile) -> Check:
    """The partition exists, offers the GPUs per node asked for, and allows the time limit."""
    from cifar_hpc.submit.batch import Batch
    from cifar_hpc.submit.executors import check_cluster

    try:
        check_cluster(profile, [Batch((), res) for res in {profile.resources, *profile.models.values()}])
    except UserError as error:
        return Check("partition", "fail", str(error))
    return Check("partition", "ok", f"{profile.partition or 'default'}: GPUs per node and time limit fit")


def check_ddp(profile, runs) -> Check:
    """The grid's devices/num_nodes agree with the profile's one srun task per device on every node
    (the profile itself cannot override that layout: its loader refuses such extra_sbatch keys)."""
    from cifar_hpc.submit.launch import place_runs

    try:
        place_runs(runs, profile)
    except UserError as error:
        return Check("ddp", "fail", str(error))
    res = profile.resources
    return Check(
        "ddp",
        "ok",
        f"{res.tasks_per_node} srun task(s) per node = {max(res.gpus_per_node, 1)} device(s) per node, "
        f"{res.nodes} node(s): Lightning's devices and num_nodes are set to match",
    )


def check_submission(grid_name: str, profile, results_dir: Path, executor: str) -> Check:
    """What `cifar-hpc submit --dry-run` would say, through the same path."""
    from cifar_hpc.submit.launch import submit
    from cifar_hpc.submit.options import SubmitOptions

    try:
        done = submit(grid_name, profile, SubmitOptions(executor=executor, results_dir=results_dir, dry_run=True))
    except UserError as error:
        return Check("submission", "fail", str(error))
    if done.problems:  # the dry run lists them as warnings; a real submission would stop on them
        more = f" (and {len(done.problems) - 1} more)" if len(done.problems) > 1 else ""
        return Check("submission", "fail", f"a real submission would stop: {done.problems[0]}{more}")
    return Check(
        "submission",
        "ok",
        f"{len(done.selection.chosen)} of {counted(len(done.selection.runs), 'run')} would be "
        f"submitted in {counted(len(done.batches), 'job')}",
    )


def check_container(profile) -> Check:
    """The runtime on this node's PATH once the profile's setup lines ran, the image readable, and the
    image's Python and cifar-hpc those of this side: a tiny probe through the jobs' own container
    command, with a timeout (``cifar_hpc.cluster.image_check``)."""
    from cifar_hpc.cluster.image_check import image_findings

    if profile.runtime == "none":
        return Check("container", "ok", "bare metal (runtime none)")
    findings = image_findings(profile.runtime, str(profile.image), profile.setup, binds=profile.binds)
    for status in ("fail", "warn"):
        said = [f.detail for f in findings if f.status == status]
        if said:
            return Check("container", status, f"{profile.runtime}: {'; '.join(said)}")
    return Check("container", "ok", f"{profile.runtime}: {findings[0].detail}")


def check_data(data_dirs: set[str]) -> list[Check]:
    from cifar_hpc.data.cifar_files import load_cifar10, verify

    checks = []
    for folder in sorted(data_dirs):
        try:
            verify(folder)
            arrays = load_cifar10(folder)
        except UserError as error:
            checks.append(Check("data", "fail", str(error)))
            continue
        label = "GENERATED data, not CIFAR-10" if arrays.generated else "CIFAR-10"
        checks.append(
            Check(
                "data",
                "warn" if arrays.generated else "ok",
                f"{folder}: {label}, {len(arrays.train_y)} train / {len(arrays.test_y)} test images",
            )
        )
    return checks


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding ``path`` (from /proc/mounts: the longest matching mount)."""
    path = path.resolve()
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount, fstype, *_ = line.split()
            if (str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")) and len(mount) > len(best):
                best, kind = mount, fstype
    except OSError:
        pass
    return kind


def check_results_dir(results_dir: Path) -> Check:
    from cifar_hpc.training.results import check_writable

    try:
        probe = check_writable(results_dir, "results dir")
    except UserError as error:
        return Check("results dir", "fail", str(error))
    kind = filesystem_type(probe)
    if kind not in SHARED_FILESYSTEMS:
        return Check(
            "results dir",
            "warn",
            f"{results_dir} is on {kind}: fine on one machine, but compute nodes of a "
            "cluster only see it if it is shared (NFS, Lustre, GPFS, ...)",
        )
    return Check("results dir", "ok", f"{results_dir} on {kind}")


def check_wandb(mode: str = "auto", *, executor: str = "slurm") -> Check:
    """What W&B does for a run started here, by the rule training itself follows (``resolve_wandb``:
    a key, then a probe of a few seconds). A W&B reachable from the login node says nothing about the
    compute nodes: a node without a route falls back to offline on its own. Never shows the key."""
    from cifar_hpc.submit.executors import WITHHELD_FROM_SLURM
    from cifar_hpc.training.wandb_mode import netrc_has_key, netrc_path, resolve_wandb

    if mode == "disabled":
        return Check("wandb", "ok", "disabled (wandb.mode disabled): runs log to logs/metrics.csv only")
    choice = resolve_wandb(mode)
    if choice.offline:
        later = "runs log offline, `cifar-hpc sync` uploads them later"
        return Check("wandb", "warn" if choice.warning else "ok", f"offline: {choice.reason}; {later}")
    detail = f"online ({choice.reason} from this machine; a node without a route logs offline)"
    if executor == "slurm" and choice.key_source in WITHHELD_FROM_SLURM and not netrc_has_key():
        return Check(
            "wandb",
            "warn",
            f"{detail}, but jobs do not get {choice.key_source} (kept out of Slurm's spool) and "
            f"{netrc_path()} has no key: run `wandb login` once, or jobs log offline",
        )
    return Check("wandb", "ok", detail)


def check_tricks(runs) -> list[Check]:
    from cifar_hpc.training.tricks import resolutions

    notes = sorted({note for run in runs for note in resolutions(run.config)})
    return [Check("tricks", "ok", note) for note in notes] or [Check("tricks", "ok", "no clashing combinations")]


def check_design(grid, runs) -> list[Check]:
    """Comparisons that change more (or less) than they say once the trick clashes are resolved:
    one WARN per cell and reference (its models and seeds share the note). Cells that train the
    same thing never get here: expansion refuses them, and the grid check fails."""
    from cifar_hpc.study.design import comparison_note, reference_of

    first = {}  # (cell, axes but the seed) -> run: each comparison is made within the same axes
    for run in runs:
        first.setdefault((run.cell, _axes_but_seed(run.config, grid)), run)
    notes: dict[str, None] = {}  # ordered set
    for (cell, axes), run in first.items():
        ref_cell = reference_of(grid, cell)
        ref = first.get((ref_cell, axes))
        note = comparison_note(run, ref) if ref is not None else None
        if note:
            notes[f"{cell} vs {ref_cell}: {note}"] = None
    if not notes:
        return [Check("design", "ok", "each comparison changes what it says (after the trick clash resolutions)")]
    return [Check("design", "warn", note) for note in notes]


def _axes_but_seed(cfg, grid) -> tuple:
    return tuple(getattr(cfg, name) for name in ("model", *grid.axes) if name != "seed")


def check_executor(executor: str) -> tuple[str, Check]:
    """The executor ``submit`` would use here (``auto``: Slurm when sbatch is on PATH), and a line saying so."""
    from cifar_hpc.submit.options import SubmitOptions

    kind = SubmitOptions(executor=executor).resolved().executor
    if executor != "auto":
        return kind, Check("executor", "ok", f"{kind} (--executor {executor})")
    why = "sbatch on PATH: job arrays" if kind == "slurm" else "no sbatch on PATH, runs train on this machine"
    return kind, Check("executor", "ok", f"{kind}, as submit chooses here: {why}")


def run_checks(grid_name: str | None, profile, results_dir: Path, *, executor: str = "auto") -> list[Check]:
    executor, said = check_executor(executor)
    checks: list[Check] = [said]
    runs = []
    if grid_name:
        from cifar_hpc.study.grid import expand, load_grid

        try:
            grid = load_grid(grid_name)
            runs = expand(grid, results_dir=results_dir)
            checks.append(Check("grid", "ok", f"{grid_name}: {counted(len(runs), 'run')}"))
            checks += check_design(grid, runs)
        except UserError as error:
            checks.append(Check("grid", "fail", str(error)))
    slurm_ok = False
    if executor == "slurm":
        checks.append(check_slurm())
        slurm_ok = checks[-1].status != "fail"
        if slurm_ok:
            checks += [check_srun(), check_partition(profile)]
        checks.append(check_ddp(profile, runs))
    checks.append(check_container(profile))
    if runs:
        checks += check_data({run.config.data.dir for run in runs})
    checks.append(check_results_dir(results_dir))
    checks += [check_wandb(mode, executor=executor) for mode in sorted({r.config.wandb.mode for r in runs} or {"auto"})]
    if runs:
        checks += check_tricks(runs)
        if slurm_ok or executor == "local":
            checks.append(check_submission(grid_name, profile, results_dir, executor))
    return checks
