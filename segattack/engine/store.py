"""Result folders that lose nothing: atomic files, whole-folder replacement, ownership markers, locks.

A finished result is only ever replaced by a complete successor: files are written beside their
destination and renamed, and a run folder is built whole in a staging folder on the destination's
own file system, then swapped in. A folder segattack wrote carries a marker file, so a folder it
did not write (a user's own files) is refused rather than overwritten; a lock file beside a folder
keeps two processes from writing it at once. Where the folder's parent is not writable (a writable
mount point under a read-only parent, a common scratch layout), the lock and the staging folder live
inside the folder instead, and the new content is swapped in entry by entry.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout

MARKER = ".segattack"  # present in every folder segattack writes (run folders, report folders)
INNER_LOCK = ".segattack.lock"  # the lock inside a folder whose parent is not writable
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full disk, a full quota


class FolderError(OSError):
    """An output folder that cannot be used: a file, someone else's files, or busy."""


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename (never half a file)."""
    path = Path(path)
    with no_space_named(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: a kill never leaves half a file."""
    path = Path(path)
    with no_space_named(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:  # a Python file: a full disk is OSError(ENOSPC), not torch's text
                os.fchmod(handle.fileno(), 0o644)  # mkstemp's 0600 would make shared results unreadable
                torch.save(obj, handle)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@contextmanager
def no_space_named(path: Path) -> Iterator[None]:
    """A full disk (or quota) while writing ``path`` (a file, or a folder being assembled) becomes one
    message naming it."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in NO_SPACE:
            raise
        reason = exc.strerror or os.strerror(exc.errno)
        error = FolderError(
            f"cannot write {path}: no space left on its device ({reason}); free some space and run "
            f"the same command again (finished work is kept)"
        )
        error.errno = exc.errno
        raise error from None


def json_matches(path: Path, **expected: Any) -> bool:
    """True when ``path`` is a readable JSON object holding every ``key=value`` of ``expected``
    (how a finished result is recognised as belonging to the current parameters)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and all(doc.get(key) == value for key, value in expected.items())


def output_folder(path: str | os.PathLike, what: str = "output folder") -> Path:
    """``path`` resolved (symlinks followed), checked before any work: not empty text, not a file,
    and either new, empty, or marked as segattack's."""
    if not str(path).strip():
        raise FolderError(f"the {what} is empty text; name a folder")
    folder = Path(path).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise FolderError(f"{what} {folder} is a file")
    if folder.is_dir() and any(p.name != INNER_LOCK for p in folder.iterdir()) and not (folder / MARKER).is_file():
        raise FolderError(
            f"{what} {folder} holds files segattack did not write; choose a new or empty folder "
            f"(segattack replaces its own folders whole)"
        )
    return folder


def claim(folder: Path) -> Path:
    """Create ``folder`` if needed and mark it as segattack's."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).touch()
    return folder


def in_place(folder: Path) -> bool:
    """True when ``folder`` must be rewritten in place: it exists and is a mount point (which cannot
    be renamed) or its parent is not writable (nothing can be created beside it)."""
    return folder.is_dir() and (os.path.ismount(folder) or not os.access(folder.parent, os.W_OK))


def lock_path(folder: Path) -> Path:
    """The lock file of ``folder``: beside it, so replacing the folder keeps the lock; inside it
    (left alone by the swap) when nothing can be written beside it."""
    if folder.is_dir() and not os.access(folder.parent, os.W_OK):
        return folder / INNER_LOCK
    return folder.parent / f".{folder.name}.lock"


@contextmanager
def locked(folder: Path, wait: float = 0) -> Iterator[None]:
    """Hold the lock of ``folder`` (:func:`lock_path`); another holder gets a message naming the
    folder after ``wait`` seconds."""
    if not folder.is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_path(folder))
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        raise FolderError(
            f"another segattack process is writing {folder}; wait for it to finish or choose another folder"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _staging_parent(folder: Path) -> Path:
    """A place on ``folder``'s own file system: its parent, or the folder itself (:func:`in_place`)."""
    return folder if in_place(folder) else folder.parent


def replace_folder(folder: Path, build: Callable[[Path], None]) -> None:
    """Build the new content of ``folder`` in a staging folder on the same file system, then swap it
    in whole: until the swap the old content stays, and no file of it survives the swap."""
    parent = _staging_parent(folder)
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{folder.name}.staging-"))
    try:
        build(staging)
        (staging / MARKER).touch()
        os.chmod(staging, 0o755)
        if parent == folder:  # a mount point, or a read-only parent: swap the folder's entries instead
            _swap_entries(folder, staging)
            return
        old = None
        if folder.exists():
            old = Path(tempfile.mkdtemp(dir=parent, prefix=f".{folder.name}.old-"))
            os.replace(folder, old / "content")
        os.replace(staging, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_entries(folder: Path, staging: Path) -> None:
    old = Path(tempfile.mkdtemp(dir=folder, prefix=".old-"))
    for entry in folder.iterdir():
        if entry not in (staging, old) and entry.name != INNER_LOCK:
            os.replace(entry, old / entry.name)
    for entry in staging.iterdir():
        os.replace(entry, folder / entry.name)
    shutil.rmtree(old, ignore_errors=True)
