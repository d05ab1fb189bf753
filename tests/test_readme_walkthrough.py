"""The README is a guide that works as written: its walk-through ("Your own study in five minutes")
runs here exactly as it stands, and every link in the user docs points inside the repository.

The walk-through is the text between ``<!-- walkthrough:start -->`` and ``<!-- walkthrough:end -->``:
each ``toml`` block is written to the file the prose before it names (the last ```name.toml``` there),
each ``bash`` block runs line by line with bash in an empty folder, ``cifar-hpc`` being this venv's.
A user copies those lines; a line that fails here fails for them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cifar_hpc.config.settings import read_toml, tomllib

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START, END = "<!-- walkthrough:start -->", "<!-- walkthrough:end -->"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```[ \t]*$", re.M | re.S)
_TOML_NAME = re.compile(r"`([\w.+-]+\.toml)`")


def walkthrough(text: str) -> list[tuple[str, str, str]]:
    """The walk-through's steps in order: ``("file", name, text)`` for a TOML block, ``("bash", "", lines)``."""
    assert text.count(START) == 1 and text.count(END) == 1, f"README.md needs one {START} ... {END}"
    part = text[text.index(START) : text.index(END)]
    steps, prose_from = [], 0
    for block in _FENCE.finditer(part):
        kind, body = block[1], block[2]
        if kind == "toml":
            names = _TOML_NAME.findall(part[prose_from : block.start()])
            assert names, f"the text before this TOML block names no file to write it to:\n{body[:200]}"
            steps.append(("file", names[-1], body))
        elif kind == "bash":
            steps.append(("bash", "", body))
        else:
            raise AssertionError(f"walk-through block of kind {kind!r}: only toml and bash blocks are run")
        prose_from = block.end()
    return steps


def test_the_walkthrough_writes_a_grid_and_runs_submit_collect_report():
    """Fast: what the slow test runs is there, in a user's order (no training here)."""
    steps = walkthrough(README.read_text())
    kinds = [kind for kind, _, _ in steps]
    assert "file" in kinds and kinds.index("file") < kinds.index("bash", kinds.index("file"))
    commands = [line for kind, _, body in steps if kind == "bash" for line in _lines(body)]
    for verb in ("data synth", "submit --grid", "collect", "report"):
        assert any(f"cifar-hpc {verb}" in line for line in commands), f"no `cifar-hpc {verb}` line"
    grid = _grid(steps)
    assert any("compare_to" in cell for cell in grid["cells"]), "the walk-through's grid shows compare_to"


@pytest.mark.slow
def test_the_readme_walkthrough_runs_as_written(tmp_path):
    """Every line of the walk-through succeeds in an empty folder, and gives what the text says: each
    run completed, the table's rows (each cell with its reference), the report's file."""
    steps = walkthrough(README.read_text())
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    assert (Path(sys.executable).parent / "cifar-hpc").exists(), "cifar-hpc is not installed in this venv"
    said: dict[str, str] = {}
    for kind, name, body in steps:
        if kind == "file":
            (tmp_path / name).write_text(body)
            continue
        for line in _lines(body):
            done = subprocess.run(
                ["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
            )
            assert done.returncode == 0, (
                f"{line!r} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
            said[line] = done.stdout
    grid_name = next(Path(name).stem for kind, name, _ in steps if kind == "file")
    grid = read_toml(tmp_path / f"{grid_name}.toml", "grid")
    study = tmp_path / "runs" / grid_name
    cells = [cell["name"] for cell in grid["cells"]]
    expected = len(cells) * len(grid["axes"]["seed"]) * len(grid["axes"].get("model", ["resnet18"]))
    statuses = [json.loads(p.read_text())["status"] for p in study.glob("*/result.json")]
    assert statuses == ["completed"] * expected, statuses

    table = next(out for line, out in said.items() if line.startswith("cifar-hpc collect"))
    baseline = grid.get("baseline_cell", "baseline")
    for cell in grid["cells"]:
        reference = "—" if cell["name"] == baseline else re.escape(cell.get("compare_to", baseline))
        seeds = len(grid["axes"]["seed"])
        row = rf"^resnet18\s+{re.escape(cell['name'])}\s+{reference}\s+{seeds}/{seeds}\s"
        assert re.search(row, table, re.M), f"no row {cell['name']} vs {reference} in:\n{table}"
    assert (study / "report.html").stat().st_size > 10_000


def _lines(body: str) -> list[str]:
    return [line for line in (raw.strip() for raw in body.splitlines()) if line and not line.startswith("#")]


def _grid(steps: list[tuple[str, str, str]]) -> dict:
    """The walk-through's (first) grid, as TOML."""
    return tomllib.loads(next(body for kind, _, body in steps if kind == "file"))


# --- links: the user docs point inside the repository --------------------------------------------

USER_DOCS = [
    README,
    *sorted((ROOT / "docs").rglob("*.md")),
    *(ROOT / d / "README.md" for d in ("containers", "slurm", "bench")),
]
_LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)


def _prose(path: Path) -> str:
    return _FENCE.sub("", path.read_text())  # code blocks hold commands and comments, not links or headings


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    heads = re.findall(r"^#{1,6}\s+(.+?)\s*$", _prose(path), re.M)
    return {re.sub(r"[^\w\- ]", "", head.lower()).replace(" ", "-") for head in heads}


def broken_links(doc: Path, root: Path) -> list[str]:
    """Each link of ``doc`` that leaves ``root``, names no file, or names a heading its file lacks."""
    broken = []
    for target in _LINK.findall(_prose(doc)):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.is_relative_to(root):
            broken.append(f"{target} (outside the repository)")
        elif not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target} (no heading #{anchor} in {file.relative_to(root)})")
    return broken


def test_a_link_out_of_the_repository_a_missing_file_or_heading_is_found(tmp_path):
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    (repo / "docs" / "a.md").write_text("# A page\n\n## W&B: `online` only\n")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "DESIGN.md").write_text("# there, but not for users\n")
    doc = repo / "README.md"
    doc.write_text(
        "[ok](docs/a.md) [ok](docs/a.md#wb-online-only) [ok](#top) [web](https://example.org/x)\n"
        "[out](../shared/DESIGN.md) [gone](docs/b.md) [head](docs/a.md#nothing)\n\n# Top\n"
        "```bash\n# not a heading [nor](a-link.md)\n```\n"
    )
    assert broken_links(doc, repo.resolve()) == [
        "../shared/DESIGN.md (outside the repository)",
        "docs/b.md (no such file)",
        "docs/a.md#nothing (no heading #nothing in docs/a.md)",
    ]


@pytest.mark.parametrize("doc", [d for d in USER_DOCS if d.exists()], ids=lambda d: str(d.relative_to(ROOT)))
def test_every_relative_link_in_the_user_docs_resolves_inside_the_repository(doc):
    assert not broken_links(doc, ROOT), f"{doc.relative_to(ROOT)}: " + "; ".join(broken_links(doc, ROOT))
