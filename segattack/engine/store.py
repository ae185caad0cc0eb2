"""Result folders that lose nothing: atomic files, whole-folder replacement, ownership markers, locks.

A finished result is only ever replaced by a complete successor: files are written beside their
destination and renamed, and a run folder is built whole in a staging folder on the destination's
own file system, then swapped in. A folder segattack wrote carries a marker file, so a folder it
did not write (a user's own files) is refused rather than overwritten, and the marker names its owner's
kind (a run or studies folder, a report folder), so one command never replaces the other's folder; a
lock file beside a folder
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

MARKER = ".segattack"  # present in every folder segattack writes; its text names the folder's kind
KINDS = ("run", "studies", "report")  # a run's folder (attack, a report's runs/X), the studies', a report's
KIND_COMMANDS = {"run": "segattack attack", "studies": "segattack report", "report": "segattack report"}
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
                _torch_save(obj, handle, path)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _torch_save(obj: Any, handle: Any, path: Path) -> None:
    """``torch.save``; its zip writer's own failure (``[enforce fail at inline_container.cc]``, what a
    disk filling up mid-write can give) becomes an OSError: ENOSPC where the disk is full (named by
    :func:`no_space_named`), else one naming the file."""
    try:
        torch.save(obj, handle)
    except RuntimeError as exc:
        if "inline_container" not in str(exc):
            raise
        if shutil.disk_usage(path.parent).free < (1 << 20):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) from None
        raise OSError(
            errno.EIO, f"cannot write {path}: torch.save failed ({str(exc).strip().splitlines()[0]})"
        ) from None


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


def folder_kind(folder: Path) -> str | None:
    """The kind of folder segattack wrote at ``folder`` (:data:`KINDS`), None where it holds no marker. A
    marker from before kinds were written (empty) is read from the content: a report holds ``runs/``,
    ``index.html`` or ``report.ipynb``, a studies folder ``studies.json``, else it is a run's."""
    text = _marker_text(folder)
    if text is None:
        return None
    if text in KINDS:
        return text
    if any((folder / name).exists() for name in ("runs", "index.html", "report.ipynb")):
        return "report"
    return "studies" if (folder / "studies.json").exists() else "run"


def _marker_text(folder: Path) -> str | None:
    try:
        return (folder / MARKER).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def output_folder(path: str | os.PathLike, what: str = "output folder", kind: str = "run") -> Path:
    """``path`` resolved (symlinks followed), checked before any work: not empty text, not a file,
    and either new, empty, or marked as segattack's folder of ``kind`` (an attack never replaces a
    report, a report never writes into a run's folder)."""
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
    owner = folder_kind(folder) if folder.is_dir() else None
    if owner is not None and owner != kind:
        raise FolderError(
            f"{what} {folder} is a {owner} folder ({KIND_COMMANDS[owner]} wrote it), not a {kind} folder; "
            f"nothing was changed: choose a new or empty folder"
        )
    return folder


def claim(folder: Path, kind: str) -> Path:
    """Create ``folder`` if needed and mark it as segattack's folder of ``kind``."""
    folder.mkdir(parents=True, exist_ok=True)
    if _marker_text(folder) != kind:
        (folder / MARKER).write_text(kind + "\n", encoding="utf-8")  # a torn one is read from the content
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


def replace_folder(folder: Path, build: Callable[[Path], None], kind: str = "run") -> None:
    """Build the new content of ``folder`` (a folder of ``kind``) in a staging folder on the same file
    system, then swap it in whole: until the swap the old content stays, and no file of it survives."""
    parent = _staging_parent(folder)
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{folder.name}.staging-"))
    try:
        build(staging)
        (staging / MARKER).write_text(kind + "\n", encoding="utf-8")
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
