"""Where the optional packages are missing (TensorRT, cuda-bindings, onnxconverter-common,
OpenVINO, lpips, PyAV), as on the GPU machine this project can reach: every toolkit module still
imports, the GPU tests still collect and skip for the reason that applies, and the GPU check's
plan names what it skips and why. The packages are hidden for real (``import`` fails in every
process of the run: tests/hidden_packages/sitecustomize.py), not mocked."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = ("tensorrt", "cuda", "onnxconverter_common", "openvino", "lpips", "av")
TOOLKIT = ("train", "export", "runtime", "benchmarks")


def without_optional_packages(*command: str, timeout: int = 600) -> subprocess.CompletedProcess:
    hider = str(Path(__file__).parent / "hidden_packages")
    path = os.pathsep.join([hider, *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {
        **os.environ,
        "PYTHONPATH": path,
        "DBSI_HIDDEN_PACKAGES": ",".join(HIDDEN),
        "PYTHON": sys.executable,
    }
    return subprocess.run(
        list(command), capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout
    )


def test_the_packages_are_really_hidden():
    probe = "import importlib.util as u; print([u.find_spec(n) for n in ('openvino', 'lpips')])"
    done = without_optional_packages(sys.executable, "-c", probe + "; import tensorrt")
    assert "[None, None]" in done.stdout
    assert "ModuleNotFoundError" in done.stderr


def test_every_toolkit_module_imports_without_them():
    modules = [
        f"dbsi.{package}.{info.name}"
        for package in TOOLKIT
        for info in pkgutil.iter_modules([str(ROOT / package)])
    ]
    program = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    done = without_optional_packages(sys.executable, "-c", program, *modules)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
def test_the_gpu_tests_collect_without_them():
    done = without_optional_packages(
        sys.executable, "-m", "pytest", "-m", "gpu", "--collect-only", "-q", "-p",
        "no:cacheprovider", "tests",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    assert " tests collected" in done.stdout or "/" in done.stdout.splitlines()[-1]


@pytest.mark.slow
def test_on_a_cpu_machine_the_gpu_tests_skip_for_want_of_a_cuda_device(tmp_path):
    report = tmp_path / "gpu.xml"
    done = without_optional_packages(
        sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
        f"--junitxml={report}", "tests",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    reasons = [
        skipped.get("message", "")
        for skipped in ElementTree.parse(report).getroot().iter("skipped")
    ]
    assert sum("no CUDA device" in reason for reason in reasons) >= 6
    assert not any("TensorRT not installed" in reason for reason in reasons)


def test_the_gpu_check_plan_says_what_it_skips_and_why():
    done = without_optional_packages("bash", "scripts/gpu-check.sh", "--plan", timeout=180)
    assert done.returncode == 0, done.stderr
    lines = {
        line.split(":")[0].split()[-1]: line for line in done.stdout.splitlines() if ":" in line
    }
    for step in ("training", "speed-pytorch", "parity-pytorch", "engine-fp32", "engine-fp16"):
        assert lines[step].startswith("SKIPPED"), lines[step]
    assert "tensorrt not importable" in lines["engine-fp32"]
    assert "cuda-bindings" in lines["engine-fp32"]
    assert "onnxconverter_common not importable" in lines["export-fp16"]
    assert "no NVIDIA GPU" in lines["training"]
