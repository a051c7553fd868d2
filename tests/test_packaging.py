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


def requirements_of(wheel: Path, extra: str) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as archive:
        text = next(archive.read(n).decode() for n in archive.namelist() if n.endswith("METADATA"))
    marker = f'; extra == "{extra}"'
    found = {}
    for line in text.splitlines():
        if line.startswith("Requires-Dist: ") and line.endswith(marker):
            spec = line[len("Requires-Dist: ") : -len(marker)].replace(" ", "")
            name = spec.split("<")[0].split(">")[0].split("=")[0]
            found[name] = spec[len(name) :]
    return found


@pytest.mark.parametrize(
    ("extra", "cuda_python", "tensorrt", "onnxruntime_gpu"),
    [
        ("gpu", "<13,>=12.6.1", ("tensorrt-cu12", "<11,>=10.12"), "<1.27,>=1.20"),
        ("gpu-cu13", "<14,>=13", ("tensorrt-cu13", "<11,>=10.13.2"), "<1.32,>=1.27"),
    ],
)
def test_each_gpu_extra_pins_one_cuda_major(wheel, extra, cuda_python, tensorrt, onnxruntime_gpu):
    requirements = requirements_of(wheel, extra)
    assert requirements["cuda-python"] == cuda_python
    assert requirements[tensorrt[0]] == tensorrt[1]
    assert requirements["onnxruntime-gpu"] == onnxruntime_gpu
