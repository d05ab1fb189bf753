"""cifar_hpc.data.cifar_files and cifar_hpc.data.fetch on real files, a real HTTP server on 127.0.0.1 and real processes; no mocks."""

from __future__ import annotations

import collections
import hashlib
import http.server
import io
import logging
import multiprocessing
import os
import pickle
import shutil
import socket
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cifar_hpc.base.errors import UserError
from cifar_hpc.cli.data import app
from cifar_hpc.data import cifar_files, fetch, layout

# ---------------------------------------------------------------------------------------------
# Fixtures: a small generated set, an archive laid out like the official one, an HTTP server


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated set, 5 × 20 training images and 50 test images; tests that change it copy it first."""
    root = tmp_path_factory.mktemp("small")
    cifar_files.write_synthetic(root, train_per_batch=20, test=50, seed=0)
    return root


@pytest.fixture
def small_copy(small: Path, tmp_path: Path) -> Path:
    """A private copy of ``small``'s batch dir, to break."""
    return Path(shutil.copytree(small / layout.BATCH_DIR, tmp_path / "copy" / layout.BATCH_DIR))


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, str]:
    """(tar.gz bytes, md5) laid out like cifar-10-python.tar.gz: a top-level cifar-10-batches-py/ with
    the batches, batches.meta and readme.html, and no GENERATED marker (it plays the real archive)."""
    root = tmp_path_factory.mktemp("archive")
    folder = cifar_files.write_synthetic(root, train_per_batch=10, test=20, seed=3)
    (folder / layout.GENERATED_MARKER).unlink()
    (folder / "readme.html").write_text("<html>stand-in</html>\n")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname=layout.BATCH_DIR)
    body = buffer.getvalue()
    return body, hashlib.md5(body).hexdigest()


class Server:
    """Serves ``files`` (name -> bytes) on 127.0.0.1, counting GETs per path; 404 for anything else.
    ``cut``: name -> bytes sent before the server closes the connection, with the whole body's
    Content-Length announced (a dropped download)."""

    def __init__(self, files: dict[str, bytes], *, delay_s: float = 0.0, cut: dict[str, int] | None = None) -> None:
        self.files = files
        self.delay_s = delay_s
        self.cut = cut or {}
        self.gets: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                with server.lock:
                    server.gets[name] += 1
                body = server.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                time.sleep(server.delay_s)  # holds the first downloader inside the lock while others arrive
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: server.cut.get(name, len(body))])  # HTTP/1.0: the connection closes after

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(archive: tuple[bytes, str]):
    body = archive[0]
    srv = Server(
        {fetch.ARCHIVE_NAME: body, "corrupt.tar.gz": body[:-100] + b"x" * 100, "dropped.tar.gz": body},
        cut={"dropped.tar.gz": len(body) // 2},
    )
    yield srv
    srv.close()


def _leftovers(root: Path) -> list[str]:
    return sorted(path.name for path in root.iterdir()) if root.exists() else []


# ---------------------------------------------------------------------------------------------
# Generated data and loading


def test_write_synthetic_round_trip(small: Path) -> None:
    arrays = cifar_files.load_cifar10(small)
    assert arrays.train_x.shape == (100, 3, 32, 32) and arrays.train_x.dtype == np.uint8
    assert arrays.test_x.shape == (50, 3, 32, 32) and arrays.test_x.dtype == np.uint8
    assert arrays.train_y.shape == (100,) and arrays.train_y.dtype == np.int64
    assert arrays.test_y.dtype == np.int64
    assert arrays.generated and arrays.kind == "generated"
    assert np.bincount(arrays.train_y, minlength=10).tolist() == [10] * 10
    assert np.bincount(arrays.test_y, minlength=10).tolist() == [5] * 10
    # The folder itself is accepted as well as the folder that contains it.
    assert np.array_equal(cifar_files.load_cifar10(small / layout.BATCH_DIR).test_x, arrays.test_x)
    assert cifar_files.verify(small) == small / layout.BATCH_DIR


def test_generated_files_read_like_the_official_ones(small: Path) -> None:
    folder = small / layout.BATCH_DIR
    # Python 2 strings: bytes keys with encoding="bytes", str keys with "latin1", as the real files give.
    with open(folder / "data_batch_1", "rb") as f:
        as_latin1 = pickle.load(f, encoding="latin1")
    with open(folder / "batches.meta", "rb") as f:
        meta = pickle.load(f, encoding="bytes")
    assert {"data", "labels", "batch_label", "filenames"} <= set(as_latin1)
    assert as_latin1["data"].shape == (20, 3072) and len(as_latin1["labels"]) == 20
    assert meta[b"label_names"] == [name.encode() for name in cifar_files.CLASSES]
    assert meta[b"num_cases_per_batch"] == 20 and meta[b"num_vis"] == 3072
    # Arrays name numpy.core, which NumPy 1 and 2 both import, not NumPy 2's numpy._core.
    raw = (folder / "data_batch_1").read_bytes()
    assert b"numpy.core.multiarray" in raw and b"numpy._core" not in raw
    assert "not CIFAR-10" in (folder / layout.GENERATED_MARKER).read_text()


def test_odd_row_counts_load_and_stay_balanced(tmp_path: Path) -> None:
    cifar_files.write_synthetic(tmp_path, train_per_batch=7, test=3, seed=5)
    arrays = cifar_files.load_cifar10(tmp_path)
    assert arrays.train_x.shape == (35, 3, 32, 32) and arrays.test_x.shape == (3, 3, 32, 32)
    counts = np.bincount(arrays.train_y, minlength=10)
    assert counts.max() - counts.min() <= 1
    assert set(arrays.test_y.tolist()) <= set(range(10)) and len(set(arrays.test_y.tolist())) == 3


def test_generated_data_is_deterministic_given_the_seed(tmp_path: Path) -> None:
    one, two, other = (
        cifar_files.load_cifar10(cifar_files.write_synthetic(tmp_path / name, train_per_batch=4, test=10, seed=s))
        for name, s in (("a", 1), ("b", 1), ("c", 2))
    )
    assert np.array_equal(one.train_x, two.train_x) and np.array_equal(one.test_y, two.test_y)
    assert not np.array_equal(one.train_x, other.train_x)


def test_generated_data_is_learnable_after_crop_and_flip(small: Path) -> None:
    """A nearest-class-mean classifier, fitted on clean training images, on randomly cropped
    (pad 4) and flipped test images: chance is 10%."""
    arrays = cifar_files.load_cifar10(small)
    means = np.stack([arrays.train_x[arrays.train_y == k].astype(np.float32).mean(0) for k in range(10)])
    rng = np.random.default_rng(0)
    padded = np.pad(arrays.test_x, ((0, 0), (0, 0), (4, 4), (4, 4)))
    augmented = np.empty(arrays.test_x.shape, np.float32)
    for i, (dy, dx) in enumerate(rng.integers(0, 9, size=(len(padded), 2))):
        image = padded[i, :, dy : dy + 32, dx : dx + 32]
        augmented[i] = image[:, :, ::-1] if rng.random() < 0.5 else image
    distances = ((augmented[:, None] - means[None]) ** 2).reshape(len(augmented), 10, -1).sum(-1)
    accuracy = (distances.argmin(1) == arrays.test_y).mean()
    assert accuracy > 0.6, accuracy


def test_write_synthetic_replaces_an_older_generated_set(tmp_path: Path) -> None:
    cifar_files.write_synthetic(tmp_path, train_per_batch=2, test=10, seed=0)
    cifar_files.write_synthetic(tmp_path, train_per_batch=3, test=10, seed=0)
    assert len(cifar_files.load_cifar10(tmp_path).train_y) == 15
    assert _leftovers(tmp_path) == [layout.BATCH_DIR]  # no temp or old folders left beside it


def test_write_synthetic_refuses_to_overwrite_real_data(small_copy: Path) -> None:
    (small_copy / layout.GENERATED_MARKER).unlink()  # now it looks like real CIFAR-10
    before = (small_copy / "test_batch").read_bytes()
    with pytest.raises(UserError, match="refusing to overwrite"):
        cifar_files.write_synthetic(small_copy.parent, train_per_batch=2, test=10)
    assert (small_copy / "test_batch").read_bytes() == before
    assert not cifar_files.load_cifar10(small_copy).generated


def test_write_synthetic_rejects_empty_sizes(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="at least one image"):
        cifar_files.write_synthetic(tmp_path, train_per_batch=0)


def _dump(path: Path, obj: object) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


class _Sneaky:
    def __reduce__(self):  # what a planted file would do; getcwd is harmless if it ever ran
        return (os.getcwd, ())


BREAKERS = {
    "missing test_batch": (lambda d: (d / "test_batch").unlink(), r"missing test_batch"),
    "truncated pickle": (
        lambda d: (d / "data_batch_2").write_bytes((d / "data_batch_2").read_bytes()[:5000]),
        r"data_batch_2: not a readable CIFAR batch pickle \(truncated or corrupt",
    ),
    "wrong shape": (
        lambda d: _dump(d / "data_batch_3", {b"data": np.zeros((7, 3000), np.uint8), b"labels": [0] * 7}),
        r"data_batch_3: 'data' must be a uint8 array of shape \(N, 3072\), got a uint8 array of shape \(7, 3000\)",
    ),
    "wrong dtype": (
        lambda d: _dump(d / "data_batch_1", {b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}),
        r"data_batch_1: 'data' must be a uint8 array .* got a float32",
    ),
    "label out of range": (
        lambda d: _dump(d / "test_batch", {b"data": np.zeros((3, 3072), np.uint8), b"labels": [1, 10, 2]}),
        r"test_batch: label 10 at row 1 is outside 0..9",
    ),
    "label count": (
        lambda d: _dump(d / "test_batch", {b"data": np.zeros((3, 3072), np.uint8), b"labels": [1, 2]}),
        r"test_batch: 2 labels for 3 images",
    ),
    "no labels key": (
        lambda d: _dump(d / "test_batch", {b"data": np.zeros((3, 3072), np.uint8)}),
        r"test_batch: not a CIFAR-10 batch: needs 'data' and 'labels'",
    ),
    "empty test set": (
        lambda d: _dump(d / "test_batch", {b"data": np.zeros((0, 3072), np.uint8), b"labels": []}),
        r"test_batch: the test batch holds no images",
    ),
    "planted global": (
        lambda d: _dump(d / "data_batch_4", {b"data": _Sneaky(), b"labels": []}),
        r"data_batch_4: .*refusing to load posix.getcwd",
    ),
}


@pytest.mark.parametrize("case", list(BREAKERS))
def test_corrupt_data_gives_a_one_line_user_error(small_copy: Path, case: str) -> None:
    breaker, message = BREAKERS[case]
    breaker(small_copy)
    with pytest.raises(UserError, match=message) as caught:
        cifar_files.load_cifar10(small_copy.parent)
    assert "\n" not in str(caught.value)


def test_verify_is_a_cheap_check_of_presence_and_headers(small_copy: Path) -> None:
    assert cifar_files.verify(small_copy.parent) == small_copy
    (small_copy / "data_batch_5").write_bytes(b"")
    with pytest.raises(UserError, match=r"data_batch_5: not a pickle \(starts with b''\)"):
        cifar_files.verify(small_copy)
    (small_copy / "data_batch_5").write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(UserError, match=r"data_batch_5: not a pickle"):
        cifar_files.verify(small_copy)
    (small_copy / "data_batch_5").unlink()
    with pytest.raises(UserError, match=r"incomplete: missing data_batch_5"):
        cifar_files.verify(small_copy)


def test_missing_folder_suggests_the_commands(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no CIFAR-10 data at .*cifar-hpc data download.*cifar-hpc data synth"):
        cifar_files.load_cifar10(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------
# Download


def test_download_extracts_verifies_and_keeps_the_archive(tmp_path: Path, server: Server, archive) -> None:
    body, md5 = archive
    folder = fetch.download(tmp_path, url=server.url(fetch.ARCHIVE_NAME), md5=md5)
    assert folder == tmp_path / layout.BATCH_DIR
    arrays = cifar_files.load_cifar10(folder)
    assert arrays.kind == "cifar10" and len(arrays.train_y) == 50 and len(arrays.test_y) == 20
    assert (folder / "readme.html").exists()
    assert (tmp_path / fetch.ARCHIVE_NAME).read_bytes() == body
    assert _leftovers(tmp_path) == sorted([fetch.ARCHIVE_NAME, layout.BATCH_DIR])  # no lock, part or temp files
    assert server.gets[fetch.ARCHIVE_NAME] == 1

    # Done already: no request at all.
    assert fetch.download(tmp_path, url=server.url(fetch.ARCHIVE_NAME), md5=md5) == folder
    assert server.gets[fetch.ARCHIVE_NAME] == 1

    # Batch dir lost, archive kept: rebuilt offline from the verified archive.
    shutil.rmtree(folder)
    assert fetch.download(tmp_path, url=server.url("offline"), md5=md5) == folder
    assert sum(server.gets.values()) == 1
    assert len(cifar_files.load_cifar10(folder).test_y) == 20


def test_download_bad_checksum_leaves_nothing_behind(tmp_path: Path, server: Server) -> None:
    url = server.url(fetch.ARCHIVE_NAME)
    with pytest.raises(UserError, match=r"checksum mismatch for .* expected 0{32} got [0-9a-f]{32}"):
        fetch.download(tmp_path, url=url, md5="0" * 32)
    assert _leftovers(tmp_path) == []


def test_download_dropped_connection_says_so_and_keeps_nothing(tmp_path: Path, server: Server, archive) -> None:
    """The server announces the whole archive and closes after half of it: the error names the bytes
    that came (not a checksum mismatch), and no part file is left to be taken for the archive."""
    url, size = server.url("dropped.tar.gz"), len(archive[0])
    with pytest.raises(UserError) as error:
        fetch.download(tmp_path, url=url, md5=archive[1])
    said = str(error.value)
    assert said.startswith(f"download of {url} failed: connection closed after {size // 2} of {size} bytes"), said
    assert "checksum" not in said and "\n" not in said
    assert _leftovers(tmp_path) == []
    assert server.gets["dropped.tar.gz"] == 1


def test_download_http_error_names_the_url(tmp_path: Path, server: Server, archive) -> None:
    url = server.url("missing.tar.gz")
    with pytest.raises(UserError, match=rf"download of {url} failed: HTTP 404"):
        fetch.download(tmp_path, url=url, md5=archive[1])
    assert _leftovers(tmp_path) == []


def test_download_connection_refused_names_the_url(tmp_path: Path, archive) -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/{fetch.ARCHIVE_NAME}"
    with pytest.raises(UserError, match=rf"download of {url} failed: .*login node"):
        fetch.download(tmp_path, url=url, md5=archive[1])
    assert _leftovers(tmp_path) == []


def test_download_reports_a_corrupt_existing_archive_and_keeps_it(tmp_path: Path, server: Server, archive) -> None:
    (tmp_path / fetch.ARCHIVE_NAME).write_bytes(archive[0][:1000])
    with pytest.raises(UserError, match=r"exists but its checksum does not match .* delete it"):
        fetch.download(tmp_path, url=server.url(fetch.ARCHIVE_NAME), md5=archive[1])
    assert (tmp_path / fetch.ARCHIVE_NAME).stat().st_size == 1000
    assert sum(server.gets.values()) == 0


def test_download_replaces_generated_data(tmp_path: Path, server: Server, archive) -> None:
    cifar_files.write_synthetic(tmp_path, train_per_batch=2, test=10)
    folder = fetch.download(tmp_path, url=server.url(fetch.ARCHIVE_NAME), md5=archive[1])
    assert cifar_files.load_cifar10(folder).kind == "cifar10"
    assert server.gets[fetch.ARCHIVE_NAME] == 1


def test_download_lock_timeout_says_which_file_to_delete(tmp_path: Path, server: Server, archive) -> None:
    lock = tmp_path / fetch.LOCK_NAME
    lock.write_text("")  # as a killed job on another node leaves it
    with pytest.raises(UserError, match=rf"waited 0.3 s for the lock {lock}.*delete that file"):
        fetch.download(tmp_path, url=server.url(fetch.ARCHIVE_NAME), md5=archive[1], lock_timeout_s=0.3)
    assert sum(server.gets.values()) == 0


def _download_in_process(root: str, url: str, md5: str, barrier, results) -> None:
    """One array task: wait for the others, then all call download() at once."""
    barrier.wait(timeout=60)
    try:
        results.put(str(fetch.download(root, url=url, md5=md5, lock_timeout_s=60)))
    except Exception as e:  # noqa: BLE001 - any failure must reach the parent, or it waits in vain
        results.put(f"error: {e!r}")


def test_concurrent_downloads_fetch_once(tmp_path: Path, archive) -> None:
    server = Server({fetch.ARCHIVE_NAME: archive[0]}, delay_s=1.0)
    try:
        ctx = multiprocessing.get_context("spawn")  # fresh interpreters, like separate array tasks
        barrier, results = ctx.Barrier(4), ctx.Queue()
        workers = [
            ctx.Process(
                target=_download_in_process,
                args=(str(tmp_path), server.url(fetch.ARCHIVE_NAME), archive[1], barrier, results),
            )
            for _ in range(4)
        ]
        for worker in workers:
            worker.start()
        paths = [results.get(timeout=120) for _ in workers]
        for worker in workers:
            worker.join(timeout=30)
        assert paths == [str(tmp_path / layout.BATCH_DIR)] * 4
        assert all(worker.exitcode == 0 for worker in workers)
        assert server.gets[fetch.ARCHIVE_NAME] == 1
        assert cifar_files.load_cifar10(tmp_path).kind == "cifar10"
        assert _leftovers(tmp_path) == sorted([fetch.ARCHIVE_NAME, layout.BATCH_DIR])
    finally:
        server.close()


# ---------------------------------------------------------------------------------------------
# Staging to node-local scratch


def test_stage_copies_once_and_reuses(small: Path, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    staged = fetch.stage_to_scratch(small, scratch=str(scratch))
    assert staged.is_relative_to(scratch / "cifar-hpc-data") and staged.name == layout.BATCH_DIR
    original, copy = cifar_files.load_cifar10(small), cifar_files.load_cifar10(staged)
    assert np.array_equal(original.train_x, copy.train_x) and np.array_equal(original.test_y, copy.test_y)
    assert copy.generated
    inode = (staged / "data_batch_1").stat().st_ino
    assert fetch.stage_to_scratch(small, scratch=str(scratch)) == staged
    assert (staged / "data_batch_1").stat().st_ino == inode  # reused, not copied again
    # Staging the staged copy is a no-op: it already is on scratch.
    assert fetch.stage_to_scratch(staged, scratch=str(scratch)) == staged


def test_stage_uses_slurm_tmpdir_then_tmpdir_then_falls_back(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLURM_TMPDIR", raising=False)
    monkeypatch.delenv("TMPDIR", raising=False)
    assert fetch.stage_to_scratch(small) == small / layout.BATCH_DIR
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmpdir"))
    assert fetch.stage_to_scratch(small).is_relative_to(tmp_path / "tmpdir")
    monkeypatch.setenv("SLURM_TMPDIR", str(tmp_path / "slurm"))
    assert fetch.stage_to_scratch(small).is_relative_to(tmp_path / "slurm")


def test_stage_falls_back_with_a_warning_when_copying_fails(
    small: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("scratch is broken")
    with caplog.at_level(logging.WARNING, logger="cifar_hpc.data.fetch"):
        assert fetch.stage_to_scratch(small, scratch=str(not_a_dir)) == small / layout.BATCH_DIR
    assert "could not stage" in caplog.text


def test_stage_from_several_threads_gives_one_copy(small: Path, tmp_path: Path) -> None:
    with ThreadPoolExecutor(4) as pool:
        paths = set(pool.map(lambda _: fetch.stage_to_scratch(small, scratch=str(tmp_path)), range(4)))
    assert len(paths) == 1
    home = next(iter(paths)).parent
    assert _leftovers(home) == [layout.BATCH_DIR]


def test_stage_requires_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no CIFAR-10 data"):
        fetch.stage_to_scratch(tmp_path / "nowhere", scratch=str(tmp_path))


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_synth_then_verify(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app, ["synth", "--dir", str(tmp_path), "--train-per-batch", "3", "--test", "10", "--seed", "1"]
    )
    assert result.exit_code == 0, result.output
    assert str(tmp_path / layout.BATCH_DIR) in result.output and "GENERATED data, not CIFAR-10" in result.output
    result = runner.invoke(app, ["verify", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "kind: generated" in result.output and "train: 15 images, test: 10 images" in result.output
    # UserError is left to the top-level CLI (one line, exit 2), not swallowed here.
    result = runner.invoke(app, ["verify", "--dir", str(tmp_path / "nowhere")])
    assert isinstance(result.exception, UserError)
