"""Getting CIFAR-10's files onto disk safely: download once per cluster, lock, stage to node-local scratch.

What the files hold and how to read or generate them is ``cifar_files``'s business; this module only
moves folders into place. Concurrency is the point of it. A Slurm array starts hundreds of tasks at
once on a shared filesystem (NFS, Lustre) where ``fcntl`` locks may not work, so:

- a batch dir only ever appears by an atomic ``rename`` of a complete folder (``swap_into_place``),
  so "the folder is there" means "the folder is complete" and readers never take a lock;
- writers (``download`` here, ``cifar_files.write_synthetic``) serialise on one ``SoftFileLock``
  (``data_lock``: an ``O_EXCL`` lock file, which NFS and Lustre honour) and re-check under it, so
  exactly one of them does the work;
- every temporary name is unique per host and process (``fresh_dir``), and is cleaned up by
  whoever next holds the lock if its writer was killed (``remove_orphans``).

This module does not import numpy, so the CLI can import it at start-up for ``CIFAR10_URL`` and
``CIFAR10_MD5``: the folder facts it needs come from ``cifar_hpc.data.layout``, which imports nothing heavy.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import secrets
import shutil
import socket
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import filelock

from cifar_hpc.base.errors import UserError
from cifar_hpc.data import layout

log = logging.getLogger(__name__)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
LOCK_NAME = f"{ARCHIVE_NAME}.lock"
"""The one lock, beside the batch dir, that every writer of that dir (download or synth) takes."""

_CHUNK = 1 << 20  # bytes per read while downloading and hashing
_HTTP_TIMEOUT_S = 60.0  # per socket operation, not for the whole download
_STAGE_LOCK_TIMEOUT_S = 600.0


# ---------------------------------------------------------------------------------------------
# Download


def download(
    root: str | Path,
    *,
    url: str = CIFAR10_URL,
    md5: str = CIFAR10_MD5,
    lock_timeout_s: float = 3600,
    progress: bool = False,
) -> Path:
    """Make sure ``root`` holds the real CIFAR-10 batch dir, downloading it if needed; return the dir.

    Safe to call from every task of an array at once on a shared filesystem: the first to take the
    lock downloads (checksum verified while streaming) and extracts beside the target, then renames
    into place; the others wait and find the dir done. A generated folder at the target is
    replaced by the real data.

    The verified archive is kept as ``root/cifar-10-python.tar.gz``: compute nodes often have no
    internet, and with the archive kept a deleted batch dir is rebuilt offline (170 MB of disk is
    cheaper than a failed array). An archive already there (ours, or one copied in by hand for an
    offline cluster) is checked against ``md5`` and used; if it does not match, the call fails and
    says so rather than deleting it: ours only ever arrive under that name after the check, so a
    bad one was put there by someone, who should decide what to do with it.
    """

    target = layout.batch_dir(root)
    base = target.parent
    if layout.is_complete(target) and not layout.is_generated(target):
        return target  # the fast path for the 999 array tasks that come after the first
    md5 = md5.strip().lower()
    make_data_dir(base)

    with data_lock(base, timeout_s=lock_timeout_s):
        if layout.is_complete(target) and not layout.is_generated(target):
            log.info("CIFAR-10 already at %s (another job fetched it while this one waited)", target)
            return target
        if target.is_dir() and not layout.is_generated(target) and any(target.iterdir()):
            missing = ", ".join(name for name in layout.DATA_FILES if not (target / name).is_file())
            raise UserError(f"{target} exists but is incomplete (missing {missing}); delete it and run again")
        remove_orphans(base)
        archive = base / ARCHIVE_NAME
        if archive.exists():
            got = _md5_of(archive)
            if got != md5:
                raise UserError(
                    f"{archive} exists but its checksum does not match (expected {md5} got {got}): it is "
                    "truncated or not the CIFAR-10 archive; delete it and run again"
                )
            log.info("using the verified archive already at %s", archive)
        else:
            _fetch(url, md5, archive, progress=progress)
        _extract(archive, target)
    log.info("CIFAR-10 ready at %s", target)
    return target


def _fetch(url: str, md5: str, archive: Path, *, progress: bool) -> None:
    """Stream ``url`` to a temp file beside ``archive``, hashing as it goes; rename it in if every byte
    the server announced arrived and the md5 matches. A dropped connection is named as such (with the
    bytes that came), not left to surface as a checksum mismatch."""
    part = archive.with_name(f"{archive.name}.part-{_host_pid()}")
    log.info("downloading %s", url)
    done, total = 0, 0
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "cifar-hpc (python urllib)"})
        with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT_S) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            digest = hashlib.md5(usedforsecurity=False)  # FIPS-mode clusters refuse md5 "for security"
            reported = 0
            # http.client's read(n) returns b"" when the server closes early, as if the body had ended
            # (it raises IncompleteRead only for some reads): Content-Length is the one way to tell
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress and done - reported >= max(total // 10, 16 * _CHUNK):
                    reported = done
                    log.info("downloaded %d MB%s", done >> 20, f" of {total >> 20} MB" if total else "")
            if total and done < total:
                raise http.client.IncompleteRead(b"", total - done)
            out.flush()
            os.fsync(out.fileno())  # the rename below must not publish data still in this node's cache
        got = digest.hexdigest()
        if got != md5:
            raise UserError(f"checksum mismatch for {url}: expected {md5} got {got} ({done} bytes); nothing was kept")
        os.replace(part, archive)
    except urllib.error.HTTPError as e:
        raise UserError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise UserError(
            f"download of {url} failed: {e.reason}; compute nodes often have no internet: "
            "run `cifar-hpc data download` on a login node first"
        ) from None
    except (TimeoutError, http.client.IncompleteRead, ConnectionError) as e:
        raise UserError(
            f"download of {url} failed: {_dropped(done, total, e)}; nothing was kept, run it again"
        ) from None
    except (OSError, ValueError, http.client.HTTPException) as e:  # ValueError: a malformed URL
        raise UserError(f"download of {url} failed: {e}") from None
    finally:
        part.unlink(missing_ok=True)


def _dropped(done: int, total: int, error: Exception) -> str:
    """What a connection that ended mid-body did: "connection closed after N of M bytes"."""
    if isinstance(error, http.client.IncompleteRead):
        done += len(error.partial)  # read(n) that raises has read these bytes, which the loop never counted
        total = total or done + (error.expected or 0)
    how = "connection closed" if isinstance(error, http.client.IncompleteRead) else f"connection lost ({error})"
    of = f" of {total}" if total else ""
    return f"{how} after {done}{of} bytes"


def _extract(archive: Path, target: Path) -> None:
    """Unpack ``archive`` into a temp dir beside ``target`` and rename its batch dir into place."""

    try:
        tmp = fresh_dir(target.parent, f".{layout.BATCH_DIR}.extract-")
    except OSError as e:
        raise UserError(f"cannot extract {archive} into {target.parent}: {e}") from None
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                _safe_extractall(tar, tmp)
        except (tarfile.TarError, OSError, EOFError) as e:
            raise UserError(f"cannot extract {archive}: {e}") from None
        extracted = tmp / layout.BATCH_DIR
        if not layout.is_complete(extracted):
            raise UserError(f"{archive} does not hold {layout.BATCH_DIR}/ with {', '.join(layout.DATA_FILES)}")
        try:
            swap_into_place(extracted, target)
        except OSError as e:
            raise UserError(f"cannot move the extracted data to {target}: {e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _safe_extractall(tar: tarfile.TarFile, dest: Path) -> None:
    if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4: refuses links out, absolute paths, devices
        tar.extractall(dest, filter="data")
        return
    for member in tar.getmembers():  # older Pythons: the same refusals, by hand
        parts = Path(member.name).parts
        if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
            raise UserError(f"refusing to extract {member.name!r}: the archive is not the CIFAR-10 archive")
    tar.extractall(dest)


def _md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# The data folder's lock and temp files (shared with cifar_files.write_synthetic)


def data_lock(base: Path, *, timeout_s: float) -> DataLock:
    """The lock every writer of ``base``'s batch dir holds while it writes."""
    return DataLock(base / LOCK_NAME, timeout_s)


class DataLock:
    """The data folder's SoftFileLock, turning a wait timeout into a ``UserError`` that says what to do."""

    def __init__(self, path: Path, timeout_s: float) -> None:
        self.path = path
        self.timeout_s = timeout_s
        # SoftFileLock = an O_EXCL marker file, which NFS and Lustre honour where fcntl locks may not.
        # Its drawback: a job killed while holding it leaves the file behind (filelock breaks it only
        # when the dead holder ran on the same host), hence the advice in the timeout message.
        self.lock = filelock.SoftFileLock(str(path), timeout=timeout_s)

    def __enter__(self) -> None:
        try:
            self.lock.acquire()
        except filelock.Timeout:
            raise UserError(
                f"waited {self.timeout_s:g} s for the lock {self.path}: another job is still writing the data, "
                "or one was killed while doing so; if no job is running, delete that file and try again"
            ) from None
        except OSError as e:
            raise UserError(f"cannot create the lock file {self.path}: {e}") from None

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def remove_orphans(base: Path) -> None:
    """Delete temp files and folders left by killed writers. Only call while holding the data lock:
    then no writer is alive, so every temp name is an orphan."""

    for path in [*base.glob(f"{ARCHIVE_NAME}.part-*"), *base.glob(f".{layout.BATCH_DIR}.*")]:
        log.info("removing %s, left by an interrupted job", path)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def fresh_dir(parent: Path, prefix: str) -> Path:
    """A new, uniquely named folder. Unlike ``tempfile.mkdtemp`` (mode 0700) it gets the umask's usual
    mode, because it is renamed into place and must end up readable by whoever reads the data."""
    path = parent / f"{prefix}{_host_pid()}-{secrets.token_hex(4)}"
    path.mkdir()
    return path


def swap_into_place(new: Path, target: Path) -> None:
    """Rename the complete folder ``new`` to ``target``, replacing any folder there.

    A directory cannot be renamed over a non-empty one, so an old folder is first renamed aside:
    for that instant ``target`` is missing (a reader gets "no data", never a mix of old and new).
    Callers decide whether an old folder may be replaced (real CIFAR-10 never is).
    """
    aside = None
    if target.exists():
        aside = target.with_name(f".{target.name}.old-{_host_pid()}")
        os.rename(target, aside)
    os.rename(new, target)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def make_data_dir(path: Path) -> None:
    """``mkdir -p``, failing with a ``UserError`` that names the folder."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the data folder {path}: {e}") from None


def _host_pid() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


# ---------------------------------------------------------------------------------------------
# Staging to node-local scratch


def stage_to_scratch(src: str | Path, *, scratch: str | None = None) -> Path:
    """Copy the batch dir to node-local scratch once per node; return the copy's batch dir.

    ``scratch`` defaults to ``$SLURM_TMPDIR``, then ``$TMPDIR``; with neither, or when ``src`` is
    already under scratch, or when copying fails (full disk, permissions: logged as a warning),
    the source batch dir is returned and training reads the shared filesystem instead.

    The copy lives at ``<scratch>/cifar-hpc-data/<key>/cifar-10-batches-py``, where ``key`` hashes
    the source's path and its files' sizes and modification times: a re-downloaded or regenerated
    source gets a fresh copy, an unchanged one is reused. Processes on one node stage together
    under a lock in scratch (node-local, so an ordinary ``FileLock`` works); the copy is written to
    a temp name and renamed, so no process ever reads half a copy.
    """

    source = layout.require_batch_dir(src)
    scratch = scratch or os.environ.get("SLURM_TMPDIR") or os.environ.get("TMPDIR")
    if not scratch:
        return source
    scratch_root = Path(scratch).expanduser().resolve()
    if source.resolve().is_relative_to(scratch_root):
        return source  # already on scratch: copying would only duplicate it

    files = sorted(p for p in source.iterdir() if p.is_file())
    key = hashlib.sha256(str(source.resolve()).encode())
    for path in files:
        stat = path.stat()
        key.update(f"\0{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    home = scratch_root / "cifar-hpc-data" / key.hexdigest()[:16]
    target = home / layout.BATCH_DIR
    if layout.is_complete(target):
        return target
    try:
        home.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(str(home.with_name(home.name + ".lock")), timeout=_STAGE_LOCK_TIMEOUT_S):
            if layout.is_complete(target):
                return target
            for orphan in home.glob(".staging-*"):  # left by a process killed mid-copy; we hold the lock
                shutil.rmtree(orphan, ignore_errors=True)
            tmp = fresh_dir(home, ".staging-")
            try:
                for path in files:
                    shutil.copyfile(path, tmp / path.name)
                os.rename(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except (OSError, filelock.Timeout) as e:
        log.warning("could not stage %s to %s (%s); reading it from where it is", source, home, e)
        return source
    log.info("staged %s to %s", source, target)
    return target
