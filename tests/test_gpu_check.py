"""scripts/gpu-check.sh, the prepared GPU run, on a machine without a GPU: its refusal, and its
sequence of steps with nvidia-smi and the Python interpreter replaced by recording stubs (what
the stubs prove: which commands run, in which order, with which arguments, and how the exit code
follows their results; not what they measure on a GPU)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu-check.sh"


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def run(tmp_path: Path, nvidia_smi: str | None, python: str = "", **env: str):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if nvidia_smi is not None:
        executable(bin_dir / "nvidia-smi", f"#!/bin/sh\n{nvidia_smi}\n")
    tools = ["bash", "timeout", "tee", "mktemp", "mkdir", "ln", "cat", "dirname", "sleep"]
    for tool in tools:
        found = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        os.symlink(found, bin_dir / tool)
    variables = {"PATH": str(bin_dir), "OUT": str(tmp_path / "out"), "HOME": str(tmp_path)}
    if python:
        variables["PYTHON"] = str(executable(tmp_path / "python", python))
    return subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, env={**variables, **env}
    )


def test_without_nvidia_smi_it_says_no_nvidia_gpu_and_exits_2(tmp_path):
    result = run(tmp_path, None)
    assert result.returncode == 2
    assert result.stderr.strip() == "no NVIDIA GPU: nvidia-smi is not on this machine"


def test_when_nvidia_smi_lists_no_gpu_it_exits_2(tmp_path):
    result = run(tmp_path, 'echo "No devices were found"; exit 6')
    assert result.returncode == 2
    assert result.stderr.startswith("no NVIDIA GPU: nvidia-smi lists none")


# Records each call on one line (the versions step's program has several).
RECORDING_PYTHON = """#!/bin/bash
echo "${{*//$'\\n'/ }}" >> "{log}"
case "$*" in
  "-c import tensorrt") exit {tensorrt} ;;
  *random_checkpoint*) echo "{checkpoint}" ;;
esac
exit 0
"""


def recorded_steps(tmp_path: Path, tensorrt_present: bool) -> tuple[int, list[str], str]:
    log = tmp_path / "calls.log"
    python = RECORDING_PYTHON.format(
        log=log, tensorrt=0 if tensorrt_present else 1, checkpoint=tmp_path / "random.pt"
    )
    result = run(tmp_path, 'echo "NVIDIA H100 80GB HBM3"', python)
    calls = [line for line in log.read_text().splitlines() if not line.startswith("-c")]
    return result.returncode, calls, result.stdout


def test_without_tensorrt_it_runs_the_tests_and_times_and_judges_pytorch(tmp_path):
    code, calls, stdout = recorded_steps(tmp_path, tensorrt_present=False)
    assert code == 0, stdout
    assert [call.split()[:4] for call in calls] == [
        ["-m", "pytest", "-q", "-p"],
        ["-m", "dbsi.benchmarks.cli", "speed", "--pytorch-only"],
        ["-m", "dbsi.benchmarks.cli", "parity", "--pytorch-only"],
    ]
    assert "-m gpu tests" in calls[0] and "--size 1024x1536" in calls[1]
    assert "no engines built" in stdout and "every step passed" in stdout


def test_with_tensorrt_it_exports_builds_times_and_judges_both_engines(tmp_path):
    code, calls, stdout = recorded_steps(tmp_path, tensorrt_present=True)
    assert code == 0, stdout
    commands = [" ".join(call.split()[2:4]) for call in calls[3:]]
    assert commands == ["onnx " + str(tmp_path / "random.pt")] * 2 + [
        "engine " + call.split()[3] for call in calls[5:7]
    ] + ["speed --model", "parity --model"]
    assert "--fp16" in calls[4] and all("--skip-checks" in call for call in calls[3:5])
    assert calls[5].split()[3].endswith("model.onnx") and "model-fp16.onnx" in calls[6]
    assert all("model-fp32.engine" in c and "model-fp16.engine" in c for c in calls[7:])


def test_a_failing_step_is_reported_and_the_exit_code_is_1(tmp_path):
    log = tmp_path / "calls.log"
    python = f'#!/bin/bash\necho "$*" >> "{log}"\ncase "$*" in *speed*) exit 3 ;; esac\n'
    python += 'case "$*" in "-c import tensorrt") exit 1 ;; esac\nexit 0\n'
    result = run(tmp_path, 'echo "NVIDIA H100 80GB HBM3"', python)
    assert result.returncode == 1
    assert "FAILED: PyTorch render on the GPU" in result.stdout and "(exit 3)" in result.stdout
    assert any("parity --pytorch-only" in line for line in log.read_text().splitlines())


def test_steps_the_time_budget_cannot_fit_are_skipped_and_counted(tmp_path):
    python = '#!/bin/bash\ncase "$*" in *pytest*) sleep 8 ;; esac\n'
    python += 'case "$*" in "-c import tensorrt") exit 1 ;; esac\nexit 0\n'
    result = run(tmp_path, 'echo "NVIDIA H100 80GB HBM3"', python, GPU_CHECK_SECONDS="20")
    assert result.returncode == 1
    assert "skipped, the time budget is spent" in result.stdout
    assert "(no time left)" in result.stdout
