"""Whole files or nothing: every artefact and output is written under a temporary name in the
destination folder and renamed into place, so an interrupted run never leaves a partial file.

The temporary files of writes under way are known (``abandon_partial_files``), so a process
that must exit in the middle of them (``bokeh-run`` after a stop signal) leaves none behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

# The disk refusing a write: full, failing, read-only, over quota.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EROFS, errno.EDQUOT})

# The temporary files of the writes under way in this process, and whether new writes are
# refused (the process is exiting: abandon_partial_files).
_partials: set[Path] = set()
_partials_lock = threading.Lock()
_closed = False


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was; an OSError
    about the temporary file is raised again naming ``path``, the file the user asked for. The
    temporary name keeps the suffix, so writers that pick a format by extension still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _partials_lock:  # so that abandon_partial_files sees every temporary file
        if _closed:
            raise OSError(f"{path}: not written, the process is exiting")
        try:
            fd, tmp = tempfile.mkstemp(
                prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent
            )
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        tmp_path = Path(tmp)
        _partials.add(tmp_path)
        # Reading the umask means setting it: under the lock, no other atomic write reads the 0.
        umask = os.umask(0)
        os.umask(umask)
    os.close(fd)
    renamed = False
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 less umask).
        tmp_path.chmod(0o666 & ~umask)
        yield tmp_path
        if not tmp_path.exists() or tmp_path.stat().st_size == 0:
            raise OSError(f"{path}: nothing was written")
        os.replace(tmp_path, path)
        renamed = True
    except OSError as exc:
        # A failed write() names no file; one that names another file is about that file.
        if exc.errno is None or exc.filename not in (None, str(tmp_path), tmp_path):
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    finally:
        if not renamed:  # after the rename the name may already be another write's
            tmp_path.unlink(missing_ok=True)
        with _partials_lock:
            _partials.discard(tmp_path)


def abandon_partial_files() -> int:
    """For a process about to exit in the middle of atomic writes: refuse every new one and
    delete the temporary files of those under way, so only whole files stay behind (a write
    that already renamed its file is whole; one that has not will fail to). Returns how many
    were deleted. Writes stay refused for the rest of the process."""
    global _closed
    locked = _partials_lock.acquire(timeout=1.0)  # a creation stuck on a slow disk: go on
    try:
        _closed = True
        partials = list(_partials)
    finally:
        if locked:
            _partials_lock.release()
    removed = 0
    for partial in partials:
        try:
            partial.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def disk_error_line(exc: OSError) -> str | None:
    """``<path>: no space left on device`` (the system's message in lower case) when ``exc``
    is the disk refusing a write (``DISK_ERRNOS``); None for any other error."""
    if exc.errno not in DISK_ERRNOS:
        return None
    message = (exc.strerror or os.strerror(exc.errno)).lower()
    return f"{exc.filename}: {message}" if exc.filename else message
