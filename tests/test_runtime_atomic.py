"""Atomic writes: whole files or nothing, with ordinary permissions."""

import errno
import os
import subprocess
import sys

import pytest

from dbsi.runtime.atomic import atomic_path, atomic_write_bytes, disk_error_line
from tests.small_disk import fill, small_disk


def test_write_lands_whole_and_leaves_no_temporary_file(tmp_path):
    atomic_write_bytes(tmp_path / "out.bin", b"abc")
    assert (tmp_path / "out.bin").read_bytes() == b"abc"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_failed_write_keeps_the_old_file_and_removes_the_partial(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_empty_result_is_an_error_not_an_empty_file(tmp_path):
    with pytest.raises(OSError, match="nothing was written"), atomic_path(tmp_path / "x.png"):
        pass
    assert not (tmp_path / "x.png").exists()


def test_file_gets_the_mode_a_plain_open_would_give(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "out.bin", b"abc")
    finally:
        os.umask(umask)
    assert (tmp_path / "out.bin").stat().st_mode & 0o777 == 0o644


def test_a_full_disk_keeps_the_old_file_and_names_the_destination(tmp_path):
    with small_disk(tmp_path / "disk", 64 * 1024) as disk:
        target = disk / "out.bin"
        target.write_bytes(b"old")
        fill(disk, 0)
        with pytest.raises(OSError) as err:
            atomic_write_bytes(target, b"x" * 32 * 1024)
        assert err.value.errno == errno.ENOSPC
        assert disk_error_line(err.value) == f"{target}: no space left on device"
        assert target.read_bytes() == b"old"
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "out.bin"]


def test_only_the_disk_refusing_a_write_is_a_disk_error():
    assert disk_error_line(OSError(errno.EROFS, "Read-only file system", "a.pt")) == (
        "a.pt: read-only file system"
    )
    assert disk_error_line(PermissionError(errno.EACCES, "Permission denied", "a.pt")) is None


ABANDON = """
import sys
from pathlib import Path
from dbsi.runtime.atomic import abandon_partial_files, atomic_path, atomic_write_bytes

folder = Path(sys.argv[1])
atomic_write_bytes(folder / "whole.bin", b"whole")
try:
    with atomic_path(folder / "half.bin") as tmp:
        tmp.write_bytes(b"half")
        assert abandon_partial_files() == 1
        assert not tmp.exists()
except OSError as exc:
    print("under way:", exc)
try:
    atomic_write_bytes(folder / "late.bin", b"late")
except OSError as exc:
    print("new:", exc)
"""


def test_a_process_that_must_exit_abandons_its_writes_under_way_and_starts_none(tmp_path):
    # In a process of its own: abandon_partial_files refuses writes for the rest of it.
    done = subprocess.run(
        [sys.executable, "-c", ABANDON, str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert f"under way: {tmp_path / 'half.bin'}: nothing was written" in done.stdout
    assert f"new: {tmp_path / 'late.bin'}: not written, the process is exiting" in done.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["whole.bin"]
