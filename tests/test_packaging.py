"""The distribution: everything lands under the dbsi namespace, nothing generic at top level."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
    )
    return next(out.glob("dbsi_bokeh-*.whl"))


def test_wheel_holds_only_the_dbsi_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"dbsi", next(t for t in top if t.endswith(".dist-info"))}


def test_each_folder_is_a_dbsi_subpackage(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("train", "export", "runtime", "benchmarks"):
        assert f"dbsi/{package}/__init__.py" in names
    assert "dbsi/train/megadepth.py" in names


def test_console_scripts_are_declared(wheel):
    with zipfile.ZipFile(wheel) as archive:
        entry_points = next(
            archive.read(n).decode() for n in archive.namelist() if n.endswith("entry_points.txt")
        )
    for command in ("bokeh-train", "bokeh-export", "bokeh-run", "bokeh-bench"):
        assert f"{command} = dbsi." in entry_points
