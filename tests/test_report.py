"""``cifar-hpc report``: one self-contained HTML file with collect's rows and numbers, opened in a real
browser (headless Chromium) with no console error and no request leaving the file; ``collect --runs``'s
tidy table of runs. Most checks use collect's fixed study (tests/test_collect.py) with a metrics log
written per completed run; one renders a generated 1,000-result study (bench/report_size.py's).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import run_cli
from test_collect import fixed_slurm, make_study

from bench.report_size import write_generated, write_metrics
from cifar_hpc.report import aggregate, display, html, raw_formats
from cifar_hpc.report.curves import row_curves
from cifar_hpc.study.recorded import load_study

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium (Debian's package; `make system-packages` installs it)"
)


def with_metrics(root: Path) -> Path:
    """collect's fixed study, each completed run with a 10-epoch logs/metrics.csv."""
    import random

    rng = random.Random(0)
    for path in sorted(root.glob("*/result.json")):
        try:
            result = json.loads(path.read_text())
        except ValueError:  # the corrupt one
            continue
        if result["status"] == "completed":
            write_metrics(path.parent, result["test_acc"], rng, epochs=10)
    return root


@pytest.fixture
def study(tmp_path) -> Path:
    return with_metrics(make_study(tmp_path / "runs" / "ablation"))


class Page(HTMLParser):
    """What a reader sees of a page: each table's rows of cell texts (by the table's class), the ids of
    the elements, the banner, and the text of the embedded JSON."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.ids: list[str] = []
        self.banner = ""
        self.data = ""
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._in: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "table":
            self._table = attrs.get("class", "")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        self._in.append("banner" if "banner" in attrs.get("class", "") else attrs.get("id", tag))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None
        if self._in:
            self._in.pop()

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if "banner" in self._in:
            self.banner += data
        if self._in and self._in[-1] == "study-data":
            self.data += data


def chromium(page: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """Headless Chromium on the file, no name resolving (nothing can leave), its console on stderr
    and every network request in a NetLog."""
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--enable-logging=stderr",
            "--v=0",
            f"--log-net-log={out}",
            f"--user-data-dir={out.parent / 'profile'}",
            *extra,
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def console_lines(stderr: str) -> list[str]:
    """Every message the page wrote to its console (errors, CSP violations, logs): Chromium logs them as CONSOLE."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def page_requests(net_log: Path) -> list[str]:
    """URLs the page asked for (its initiator is the file's opaque origin, "null"), except the file itself and
    data: URLs; the browser's own background requests ("not an origin") are not the page's."""
    log = json.loads(net_log.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        e["params"]["url"]
        for e in log["events"]
        if e["type"] == start
        and "url" in e.get("params", {})
        and e["params"].get("initiator") != "not an origin"
        and not e["params"]["url"].startswith(("file:", "data:"))
    ]


def write_report(study: Path, out: Path, capsys) -> str:
    result = run_cli(["report", study, "-o", out, "--no-slurm"], capsys)
    assert result.code == 0, result.err
    assert result.err.startswith(f"wrote {out} (") and "MB" in result.err
    return out.read_text()


def open_in_chromium(report: Path, tmp_path: Path) -> Page:
    """The DOM after loading, with the checks that hold for any report: no console line, no request."""
    done = chromium(report, tmp_path / "net.json", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    assert console_lines(done.stderr) == []
    assert page_requests(tmp_path / "net.json") == []
    return Page(done.stdout)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@needs_chromium
def test_the_report_opens_offline_in_chromium_and_shows_collects_table(study, tmp_path, capsys):
    """What a reader sees in the browser: collect's table cell for cell, one curve per row of the table
    (and a band each), the GENERATED banner; no console error, no request; a screenshot of it is a page."""
    out = tmp_path / "report.html"
    write_report(study, out, capsys)
    page = open_in_chromium(out, tmp_path)
    summary = aggregate.aggregate(load_study(study))
    columns = display.columns_for(summary)
    assert page.tables["comparison"][0] == [c.header for c in columns]
    assert page.tables["comparison"][1:] == display.display_rows(summary, columns=columns)
    rows_with_logs = len(row_curves(summary, study))
    assert rows_with_logs == len(summary.rows) == 8
    for metric in ("val_acc", "train_loss"):
        assert len([i for i in page.ids if re.fullmatch(rf"curves-curve-{metric}-\d+", i)]) == rows_with_logs
        assert len([i for i in page.ids if re.fullmatch(rf"curves-band-{metric}-\d+", i)]) == rows_with_logs
    assert page.banner == html.GENERATED_BANNER
    assert len(page.tables["runs"]) == 1 + 24  # every run, in any state
    assert len(set(page.ids)) == len(page.ids), "ids repeat across the inline figures"
    shot = tmp_path / "report.png"
    done = chromium(out, tmp_path / "net2.json", f"--screenshot={shot}", "--window-size=1300,2000", "--hide-scrollbars")
    assert done.returncode == 0 and png_size(shot) == (1300, 2000)
    pdf = tmp_path / "report.pdf"
    done = chromium(out, tmp_path / "net3.json", f"--print-to-pdf={pdf}", "--no-pdf-header-footer")
    assert done.returncode == 0 and pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 20_000


@needs_chromium
def test_a_generated_study_of_1000_results_opens_offline(tmp_path, capsys):
    root = tmp_path / "runs" / "bench"
    write_generated(root, 1000)
    out = tmp_path / "big.html"
    text = write_report(root, out, capsys)
    assert len(text.encode()) < 5_000_000
    page = open_in_chromium(out, tmp_path)
    assert len(page.tables["runs"]) == 1 + 1000
    assert len(page.tables["comparison"]) == 1 + 20
    assert len([i for i in page.ids if i.startswith("curves-curve-val_acc-")]) == 20


def test_the_embedded_json_is_collects_and_the_file_asks_for_nothing(study, tmp_path, capsys):
    """No browser needed: the data inside is collect -f json's table, the study.json and one record per
    run; no src or href leaves the file; the CSP forbids every request and allows only its own script."""
    text = write_report(study, tmp_path / "report.html", capsys)
    page = Page(text)
    data = json.loads(page.data)
    summary = aggregate.aggregate(load_study(study))
    assert data["report_schema"] == html.REPORT_SCHEMA
    assert data["summary"] == json.loads(raw_formats.render_json(summary))
    assert data["study"] == json.loads((study / "study.json").read_text())
    assert len(data["runs"]) == 24 and {r["state"] for r in data["runs"]} >= {"completed", "failed", "corrupt"}
    assert not re.findall(r'(?:src|href)="(?!#|data:)', text)
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', text).group(1)
    assert "default-src 'none'" in policy and "connect-src" not in policy
    script = re.findall(r"<script>(.*?)</script>", text, flags=re.S)
    assert len(script) == 1
    digest = base64.b64encode(hashlib.sha256(script[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy


def test_the_report_lists_failures_with_their_log_tail(study, tmp_path, capsys):
    failed = next(r for r in load_study(study).runs.values() if r.result and r.result["status"] == "failed")
    log = Path(failed.slurm.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(f"line {i}\n" for i in range(100)) + "FloatingPointError: loss is nan <here>\n")
    text = write_report(study, tmp_path / "report.html", capsys)
    block = text.split(f'data-run="{failed.run_id}"><p>', 1)[1].split("</li>", 1)[0]
    assert "loss became NaN at step 120" in block
    assert "line 76\n" in block and "line 75\n" not in block  # the last 25 lines
    assert "FloatingPointError: loss is nan &lt;here&gt;" in block  # escaped


def test_real_data_has_no_banner_and_provenance_says_what_it_knows(tmp_path, capsys):
    root = with_metrics(make_study(tmp_path / "runs" / "ablation", data="cifar10"))
    text = write_report(root, tmp_path / "r.html", capsys)
    page = Page(text)
    assert page.banner == "" and "GENERATED" not in text
    assert "cifar10 (all 18 runs that record it)" in text


def test_the_report_takes_collects_options_and_refuses_mistakes(study, tmp_path, capsys):
    summary = aggregate.aggregate(load_study(study), fixed_slurm(), baseline="+swa", target_effect_pp=0.5)
    text = html.build_report(load_study(study), fixed_slurm(), summary)
    assert Page(text).tables["comparison"][1:] == display.display_rows(summary)
    result = run_cli(["report", study, "--no-slurm", "--baseline", "+swa", "-o", tmp_path / "b.html"], capsys)
    assert result.code == 0 and "seeds for" not in (tmp_path / "b.html").read_text().split("<nav")[0]
    wrong = run_cli(["report", study, "-o", tmp_path / "report.pdf"], capsys)
    assert wrong.code == 2 and wrong.err.count("\n") == 1 and "name it .html" in wrong.err
    nothing = run_cli(["report", tmp_path / "nowhere", "--no-slurm"], capsys)
    assert nothing.code == 2 and "Traceback" not in nothing.err
    default = run_cli(["report", study, "--no-slurm"], capsys)
    assert default.code == 0 and (study / "report.html").exists()


# --- collect --runs: one row per run ------------------------------------------------------------------


def test_collect_runs_writes_one_tidy_row_per_run(study, tmp_path, capsys):
    import pandas as pd

    out = tmp_path / "runs.csv"
    result = run_cli(["collect", study, "--runs", "-o", out, "--no-slurm"], capsys)
    assert result.code == 0, result.err
    frame = pd.read_csv(out)
    assert len(frame) == 24 and frame["run_id"].is_unique
    assert frame["state"].value_counts().to_dict() == {"completed": 17, "unknown": 5, "failed": 1, "corrupt": 1}
    summary = aggregate.aggregate(load_study(study))
    counted = frame[frame["in_table"]]
    assert sorted(counted["run_id"]) == sorted(i for row in summary.rows for i in row.run_ids)
    assert {"config.model", "config.seed", "config.epochs", "test_acc", "compute_s", "gpu_hours"} <= set(frame)
    mean = counted.groupby(["model", "cell"])["test_acc"].mean()
    assert mean[("resnet18", "+swa")] == pytest.approx(next(r for r in summary.rows if r.cell == "+swa").test_acc_mean)
    as_json = run_cli(["collect", study, "--runs", "-o", tmp_path / "runs.json", "--no-slurm"], capsys)
    assert as_json.code == 0 and len(pd.read_json(tmp_path / "runs.json")) == 24
    stdout = run_cli(["collect", study, "--runs", "--no-slurm"], capsys)
    assert stdout.code == 0 and stdout.out == out.read_text()


def test_collect_runs_refuses_a_format_it_cannot_write(study, tmp_path, capsys):
    result = run_cli(["collect", study, "--runs", "-o", tmp_path / "runs.md", "--no-slurm"], capsys)
    assert result.code == 2 and "--runs writes .csv, .json or .parquet" in result.err
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        missing = run_cli(["collect", study, "--runs", "-o", tmp_path / "runs.parquet", "--no-slurm"], capsys)
        assert missing.code == 2 and "pip install pyarrow" in missing.err


def test_the_curves_read_the_file_training_writes():
    from cifar_hpc.training.metrics_log import metrics_csv
    from cifar_hpc.training.results import METRICS_LOG

    assert metrics_csv(Path("run")) == Path("run") / METRICS_LOG


# --- collect A --against B: two studies side by side ---------------------------------------------------


def shifted_copy(study: Path, to: Path, cell: str, shift: float) -> Path:
    """B: A's study copied, ``cell``'s accuracies moved by ``shift``, the +clip rows removed."""
    shutil.copytree(study, to)
    for path in to.glob("*/result.json"):
        try:
            result = json.loads(path.read_text())
        except ValueError:
            continue
        if result["config"]["cell"] == "+clip":
            shutil.rmtree(path.parent)
        elif result["config"]["cell"] == cell and result["status"] == "completed":
            result["test_acc"] = round(result["test_acc"] + shift, 4)
            path.write_text(json.dumps(result))
    manifest = json.loads((to / "study.json").read_text())
    manifest["runs"] = [r for r in manifest["runs"] if r["cell"] != "+clip"]
    (to / "study.json").write_text(json.dumps(manifest))
    return to


def test_collect_against_puts_the_same_rows_of_two_studies_side_by_side(study, tmp_path, capsys):
    from scipy import stats

    other = shifted_copy(study, tmp_path / "b" / "ablation", "+swa", 0.005)
    result = run_cli(["collect", study, "--against", other, "-f", "json", "--no-slurm"], capsys)
    assert result.code == 0, result.err
    rows = {(r["model"], r["cell"]): r for r in json.loads(result.out)["rows"]}
    swa = rows[("resnet18", "+swa")]
    a = [0.9401, 0.9365, 0.9412]
    b = [x + 0.005 for x in a]
    welch = stats.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    assert swa["diff"] == pytest.approx(0.005, abs=1e-6) and swa["a_n"] == swa["b_n"] == 3
    assert (swa["ci_low"], swa["ci_high"]) == pytest.approx((welch.low, welch.high), abs=1e-4)
    assert rows[("resnet18", "baseline")]["diff"] == pytest.approx(0, abs=1e-9)
    assert rows[("resnet18", "+clip")]["note"] == "only in A" and rows[("resnet18", "+clip")]["diff"] is None
    text = run_cli(["collect", study, "--against", other, "--no-slurm"], capsys)
    assert "+0.50 [" in text.out and "(only in A)" in text.out
    report = run_cli(["report", study, "--against", other, "--no-slurm", "-o", tmp_path / "ab.html"], capsys)
    assert report.code == 0
    page = Page((tmp_path / "ab.html").read_text())
    assert len(page.tables["against"]) == 1 + 8 and "against" in page.ids
