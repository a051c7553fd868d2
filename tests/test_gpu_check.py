"""scripts/gpu-check.sh on a machine without a GPU: its refusal, its plan for the machines it
is meant for, and its run with nvidia-smi and the Python interpreter replaced by recording
fakes (what the fakes prove: which commands run, in which order, with which arguments, what
the summary says and how the exit code follows their results; not what they measure on a
GPU). The probe's answer is the vendor boundary: the fakes answer as the H200 image would."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu-check.sh"


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gpu_check = load_gpu_check()

# What the probe finds on the one GPU machine this project can reach: torch with CUDA and
# cuda-bindings, no TensorRT, no onnxconverter-common, no OpenVINO, a CPU-only ONNX Runtime.
H200_IMAGE = {
    "torch": "2.11.0+cu130",
    "torch_cuda": "13.0",
    "torch_cuda_device": "NVIDIA H200",
    "cuda_bindings": "13.0.0",
    "cuda_bindings_devices": 1,
    "tensorrt": None,
    "tensorrt_error": "ModuleNotFoundError: No module named 'tensorrt'",
    "onnx": "1.23.0",
    "onnxconverter_common": None,
    "onnxconverter_common_error": "ModuleNotFoundError: No module named 'onnxconverter_common'",
    "openvino": None,
    "openvino_error": "ModuleNotFoundError: No module named 'openvino'",
    "onnxruntime": "1.30.0",
    "onnxruntime_providers": ["CPUExecutionProvider"],
}
EVERYTHING = {
    **H200_IMAGE,
    "tensorrt": "10.14.1",
    "onnxconverter_common": "1.16.0",
    "openvino": "2025.3.0",
    "onnxruntime_providers": [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ],
}
PYTORCH_STEPS = ["versions", "gpu-tests", "training", "speed-pytorch", "parity-pytorch"]


def statuses(outcomes) -> dict[str, str]:
    return {o.step: o.status for o in outcomes}


def test_on_the_h200_image_the_pytorch_steps_run_and_tensorrt_ones_skip_with_the_reason():
    outcomes = {o.step: o for o in gpu_check.plan(H200_IMAGE, gpu=None)}
    assert [k for k, o in outcomes.items() if o.status == "planned"] == PYTORCH_STEPS
    assert "tensorrt not importable" in outcomes["engine-fp32"].reason
    assert "onnxconverter_common not importable" in outcomes["export-fp16"].reason
    assert "no GPU provider" in outcomes["onnxruntime-gpu"].reason
    assert "nothing here uses it" in outcomes["export-fp32"].reason


def test_with_every_package_every_step_runs_within_the_default_budget():
    outcomes = gpu_check.plan(EVERYTHING, gpu=None)
    assert set(statuses(outcomes).values()) == {"planned"}
    assert sum(step.limit_s for step in gpu_check.STEPS) <= gpu_check.DEFAULT_BUDGET_S


def test_without_a_gpu_the_plan_gives_that_reason_and_the_missing_packages():
    outcomes = {o.step: o for o in gpu_check.plan(H200_IMAGE, gpu="nvidia-smi is not here")}
    assert outcomes["training"].reason == "no NVIDIA GPU (nvidia-smi is not here)"
    assert "tensorrt not importable" in outcomes["engine-fp16"].reason
    assert [k for k, o in outcomes.items() if o.status == "planned"] == ["versions"]


def test_only_the_engines_that_were_built_are_handed_on(tmp_path):
    commands = gpu_check.commands("python3", tmp_path, built=["engine-fp32"])
    for key in ("speed-engines", "parity-engines"):
        line = " ".join(commands[key])
        assert "model-fp32.engine" in line and "model-fp16.engine" not in line


# ---- the script itself, with fakes for nvidia-smi and the interpreter ----


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# Answers the probe from a file, records every other call on one line, writes a small report
# where a bokeh-bench command names --out, and exits as told per command word.
FAKE_PYTHON = """#!/bin/bash
case "$2" in *onnxruntime_providers*) cat "{probe}"; exit 0 ;; esac
echo "${{*//$'\\n'/ }}" >> "{log}"
args=("$@")
for i in "${{!args[@]}}"; do
  if [ "${{args[$i]}}" = "--out" ]; then
    out="${{args[$((i+1))]}}"; mkdir -p "$out"
    for name in speed parity training; do
      echo '{{"rows": [{{"io": "model", "backend": "fake", "size": "1024x1536",
        "median_ms": 12.5, "photo": "all photos", "psnr_db": 50.0, "passed": true,
        "images_per_s": 40.0, "peak_gpu_memory_mib": 900}}]}}' > "$out/$name.json"
    done
  fi
done
{behaviour}
exit 0
"""


def run_script(
    tmp_path: Path,
    nvidia_smi: str | None = 'echo "NVIDIA H200"',
    found: dict | None = None,
    behaviour: str = "",
    *args: str,
    **env: str,
) -> tuple[subprocess.CompletedProcess, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if nvidia_smi is not None:
        executable(bin_dir / "nvidia-smi", f"#!/bin/sh\n{nvidia_smi}\n")
    for tool in ("bash", "cat", "mkdir", "sleep"):
        os.symlink(subprocess.check_output(["which", tool], text=True).strip(), bin_dir / tool)
    probe, log = tmp_path / "probe.json", tmp_path / "calls.log"
    probe.write_text(json.dumps(found or H200_IMAGE))
    python = executable(
        tmp_path / "python", FAKE_PYTHON.format(probe=probe, log=log, behaviour=behaviour)
    )
    variables = {
        "PATH": str(bin_dir),
        "OUT": str(tmp_path / "out"),
        "HOME": str(tmp_path),
        "PYTHON": str(python),
        "TMPDIR": str(tmp_path),
    }
    # The orchestrator itself runs on this interpreter; the fake is what it drives.
    command = [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), *args]
    result = subprocess.run(
        command, capture_output=True, text=True, env={**variables, **env}, timeout=120
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return result, calls


def step_of(call: str) -> str:
    words = call.split()
    if words[:2] == ["-m", "pytest"]:
        return "pytest"
    if words[0] == "-c":
        return "versions" if "get_device_properties" in call else "checkpoint"
    return " ".join(words[2:4])


def test_without_nvidia_smi_it_says_no_nvidia_gpu_and_exits_2(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(subprocess.check_output(["which", "bash"], text=True).strip(), bin_dir / "bash")
    result = subprocess.run(
        ["bash", str(SCRIPT)],
        capture_output=True,
        text=True,
        env={"PATH": str(bin_dir), "PYTHON": sys.executable},
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "no NVIDIA GPU: nvidia-smi is not on this machine"


def test_when_nvidia_smi_lists_no_gpu_it_exits_2(tmp_path):
    result, calls = run_script(tmp_path, 'echo "No devices were found"; exit 6')
    assert result.returncode == 2 and calls == []
    assert result.stderr.startswith("no NVIDIA GPU: nvidia-smi lists none")


def test_on_the_h200_image_it_runs_the_pytorch_steps_and_writes_its_summary(tmp_path):
    result, calls = run_script(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [step_of(c) for c in calls] == [
        "versions",
        "pytest",
        "training --size",
        "speed --pytorch-only",
        "parity --pytorch-only",
    ]
    assert "-m gpu" in calls[1] and "--size 1024x1536" in calls[3]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    steps = {s["step"]: s for s in summary["steps"]}
    assert all(steps[key]["status"] == "passed" for key in PYTORCH_STEPS)
    assert "tensorrt not importable" in steps["engine-fp32"]["reason"]
    assert summary["figures"]["training images/s"] == 40.0
    assert summary["figures"]["fake 1024x1536 median ms"] == 12.5


def test_it_leaves_at_most_8_files_in_out(tmp_path):
    result, _ = run_script(tmp_path, found=EVERYTHING)
    assert result.returncode == 0, result.stdout
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(files) <= 8 and "summary.json" in files and "gpu-check.log" in files


def test_with_tensorrt_it_exports_builds_and_measures_both_engines(tmp_path):
    result, calls = run_script(tmp_path, found=EVERYTHING)
    assert result.returncode == 0, result.stdout
    later = calls[len(PYTORCH_STEPS) :]
    assert [step_of(c).split()[0] for c in later] == [
        "checkpoint", "onnx", "onnx", "engine", "engine", "speed", "parity", "speed",
    ]  # fmt: skip
    checkpoint, fp32, fp16, build32, build16, speed, parity, onnxruntime = later
    assert "--fp16" in fp16 and "--skip-checks" in fp32 and "--skip-checks" in fp16
    assert "model.onnx" in build32.split()[3] and "model-fp16.onnx" in build16.split()[3]
    assert all("model-fp32.engine" in c and "model-fp16.engine" in c for c in (speed, parity))
    assert "--model" in onnxruntime and "model.onnx" in onnxruntime


def test_a_failed_engine_build_hands_on_only_the_other_engine_and_exits_1(tmp_path):
    fail_fp16 = 'case "$*" in *"engine "*model-fp16.onnx*) exit 1 ;; esac'
    result, calls = run_script(tmp_path, found=EVERYTHING, behaviour=fail_fp16)
    assert result.returncode == 1
    measured = [c for c in calls if "speed --model" in c or "parity --model" in c]
    assert measured and all("model-fp16.engine" not in c for c in measured)
    assert all("model-fp32.engine" in c for c in measured[:2])
    assert "FAILED" in result.stdout and "engine-fp16" in result.stdout


def test_pytest_finding_no_gpu_test_counts_as_skipped(tmp_path):
    result, _ = run_script(tmp_path, behaviour='case "$*" in "-m pytest"*) exit 5 ;; esac')
    assert result.returncode == 0, result.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    tests = next(s for s in summary["steps"] if s["step"] == "gpu-tests")
    assert tests["status"] == "skipped" and "exit 5" in tests["reason"]


@pytest.mark.slow
def test_a_step_past_its_limit_is_stopped_and_later_steps_the_budget_cannot_fit_are_cut(
    tmp_path,
):
    slow = 'case "$*" in "-m pytest"*) sleep 60 ;; esac'
    result, calls = run_script(tmp_path, behaviour=slow, GPU_CHECK_SECONDS="20")
    assert result.returncode == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    steps = {s["step"]: s for s in summary["steps"]}
    assert steps["gpu-tests"]["status"] == "failed" and steps["gpu-tests"]["reason"] == (
        "time limit"
    )
    assert steps["parity-pytorch"]["status"] == "cut"


def test_plan_exits_0_without_a_gpu_and_lists_every_step(tmp_path):
    result, calls = run_script(tmp_path, None, None, "", "--plan")
    assert result.returncode == 0 and calls == []
    lines = result.stdout.splitlines()
    for step in gpu_check.STEPS:
        assert any(f" {step.key}: " in line for line in lines), step.key
    assert sum(line.startswith("SKIPPED") for line in lines) == len(gpu_check.STEPS) - 1
