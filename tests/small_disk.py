"""A real, small, full-able disk for the disk-full tests: a tmpfs of a given size, mounted for
the test and unmounted after it. Where mounting is not permitted (not root, a container without
CAP_SYS_ADMIN, not Linux) the test is skipped with the reason."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_disk(folder: Path, size_bytes: int) -> Iterator[Path]:
    """Mount a tmpfs of ``size_bytes`` on ``folder`` (created), yield it, unmount it."""
    folder.mkdir(parents=True, exist_ok=True)
    mount = shutil.which("mount")
    if mount is None:
        pytest.skip("no mount command here to make a small tmpfs")
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def fill(folder: Path, leave_bytes: int) -> None:
    """Fill ``folder``'s file system until at most ``leave_bytes`` stay free."""
    free = shutil.disk_usage(folder).free
    if free > leave_bytes:
        (folder / "filler").write_bytes(b"\0" * (free - leave_bytes))
