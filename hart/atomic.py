"""Atomic file and folder writes: a reader sees the old artifact or the whole new one, never half.

Everything is written under a temporary name in the destination's folder, flushed to disk, then
renamed into place (a rename within one filesystem is atomic). Temporary names carry the writer's
process id (`.NAME.tmp-PID-XXXXXXXX`), so a later write to the same destination can tell the
leftovers of a killed process (SIGKILL, power loss: no `finally` ran) from a write still in progress,
and removes the former before it starts.
"""

import contextlib
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from hart.errors import HartError

log = logging.getLogger(__name__)


def _fsync_tree(root: Path) -> None:
    """Flush every regular file under `root` (a file or folder); links are not followed."""
    if root.is_symlink():
        return
    files = [root] if root.is_file() else [Path(folder, name) for folder, _, names in os.walk(root) for name in names]
    for path in files:
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _temp_name(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def remove_stale(path: Path) -> list[Path]:
    """Remove the temporary files and folders that a dead process left beside `path`; -> what went.

    A previous version set aside by a writer that died before moving the new one in (`.old-`, and
    `path` missing) is put back instead: the destination keeps its last complete artifact."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(tmp|old)-(\d+)-[0-9a-f]{{8}}")
    removed = []
    if not path.parent.is_dir():
        return removed
    for candidate in path.parent.iterdir():
        match = pattern.fullmatch(candidate.name)
        if match is None or _alive(int(match.group(2))):
            continue
        if match.group(1) == "old" and not path.exists():
            os.replace(candidate, path)
            log.warning("restored %s from %s, set aside by an interrupted write", path, candidate.name)
            continue
        if candidate.is_dir() and not candidate.is_symlink():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)
        removed.append(candidate)
        log.info("removed %s, left by an interrupted write (process %s is gone)", candidate, match.group(2))
    return removed


def _prepare(path: Path) -> None:
    """The destination's folder exists and is writable, and stale leftovers beside it are gone."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HartError(f"cannot create the folder {path.parent} for {path.name} ({err.strerror or err})") from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise HartError(f"cannot write into {path.parent} (permission denied)")
    remove_stale(path)


def check_writable(path: str | Path) -> None:
    """Refuse, before any long work, an output that names a folder or a place that cannot be written.

    Nothing is created: the first existing ancestor must be a writable folder."""
    path = Path(path)
    if path.is_dir():
        raise HartError(f"{path} is a folder; name the file to write (e.g. {path / 'image.png'})")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise HartError(f"cannot write {path}: {ancestor} is a file, not a folder")
    try:  # access() says yes to root even where the filesystem says no (/proc, read-only mounts)
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as err:
        raise HartError(f"cannot write {path}: {ancestor} is not writable ({err.strerror or err})") from None


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is synced and renamed to `path`."""
    path = Path(path)
    if path.is_dir():
        raise HartError(f"{path} is a folder; name the file to write")
    _prepare(path)
    tmp = _temp_name(path, "tmp")
    try:
        yield tmp
        _fsync_tree(tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise HartError(f"could not write {path} ({err.strerror or err})") from None
    finally:
        tmp.unlink(missing_ok=True)


def check_free(path: Path, overwrite: bool = False) -> None:
    """A folder may be written at `path`: it is absent or empty, or `overwrite` allows replacing it."""
    if path.exists() and not overwrite and (not path.is_dir() or any(path.iterdir())):
        raise HartError(f"{path} already exists and is not empty; choose another output or allow overwriting")


@contextlib.contextmanager
def atomic_directory(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces `path` whole.

    An existing non-empty `path` is an error unless `overwrite`; the old folder is removed only after
    the new one is in place.
    """
    path = Path(path)
    check_free(path, overwrite)
    _prepare(path)
    tmp = _temp_name(path, "tmp")
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        old = None
        if path.exists():
            old = _temp_name(path, "old")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
