"""Whole files or nothing: every artefact and output is written under a temporary name in the
destination folder and renamed into place, so an interrupted run never leaves a partial file."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# The disk refusing a write: full, failing, read-only, over quota.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EROFS, errno.EDQUOT})


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was; an OSError
    about the temporary file is raised again naming ``path``, the file the user asked for. The
    temporary name keeps the suffix, so writers that pick a format by extension still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent
        )
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the file the mode a plain open() would (0666 less the umask).
    umask = os.umask(0)
    os.umask(umask)
    tmp_path.chmod(0o666 & ~umask)
    try:
        yield tmp_path
        if not tmp_path.exists() or tmp_path.stat().st_size == 0:
            raise OSError(f"{path}: nothing was written")
        os.replace(tmp_path, path)
    except OSError as exc:
        # A failed write() names no file; one that names another file is about that file.
        if exc.errno is None or exc.filename not in (None, str(tmp_path), tmp_path):
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    finally:
        tmp_path.unlink(missing_ok=True)


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
