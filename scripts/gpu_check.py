"""The GPU check: one prepared run on an NVIDIA machine, offline, from the source tree.

    bash scripts/gpu-check.sh          # run it; the log and reports go to $OUT (or gpu-check/)
    bash scripts/gpu-check.sh --plan   # say what would run and what would be skipped, and why

Nothing is installed and nothing is downloaded: the tree's packages are put on the path as
``dbsi.*`` and run with the interpreter at hand (PYTHON, default python3). Each optional
package is probed first (torch's CUDA, cuda-bindings, TensorRT, onnxconverter-common, ONNX
Runtime's GPU providers, OpenVINO); a step that needs a missing one is SKIPPED with the reason.
Every step has a time limit within one overall budget (GPU_CHECK_SECONDS, default 450 s, which
the limits of every step together fit); a step the budget can no longer fit is CUT and counts
as a failure. ``$OUT`` receives at most 8 files: ``gpu-check.log``, ``summary.json`` (each
step's status, seconds and reason, and the headline figures; rewritten after every step) and
the JSON reports of the steps that ran. Exit codes: 0 every step passed or was skipped, 1 a
step failed or was cut, 2 no NVIDIA GPU (``--plan`` exits 0 without one).

Standard library only: this runs before anything is known about the machine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("train", "export", "runtime", "benchmarks")
DEFAULT_BUDGET_S = 450
# Below this many seconds a step is not started (nothing useful finishes in less).
MIN_STEP_S = 15

# What the probe answers, run in the interpreter the steps will use. One line of JSON.
PROBE = r"""
import importlib, json
found = {}
def version(module):
    try:
        return getattr(importlib.import_module(module), "__version__", "present"), None
    except Exception as exc:
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
for key, module in (("torch", "torch"), ("tensorrt", "tensorrt"), ("onnx", "onnx"),
                    ("onnxconverter_common", "onnxconverter_common"), ("openvino", "openvino"),
                    ("onnxruntime", "onnxruntime"), ("cuda_bindings", "cuda.bindings")):
    found[key], found[key + "_error"] = version(module)
found["torch_cuda_device"] = None
if found["torch"]:
    import torch
    found["torch_cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        found["torch_cuda_device"] = torch.cuda.get_device_name(0)
found["cuda_bindings_devices"] = 0
if found["cuda_bindings"]:
    from cuda.bindings import runtime as cudart
    err, count = cudart.cudaGetDeviceCount()
    found["cuda_bindings_devices"] = int(count) if err == cudart.cudaError_t.cudaSuccess else 0
found["onnxruntime_providers"] = []
if found["onnxruntime"]:
    import onnxruntime
    found["onnxruntime_providers"] = onnxruntime.get_available_providers()
print(json.dumps(found))
"""

# Requirement -> (is it met, the reason to give when it is not), from the probe's answer.
REQUIREMENTS: dict[str, Callable[[dict[str, Any]], tuple[bool, str]]] = {
    "torch-cuda": lambda f: (
        bool(f.get("torch_cuda_device")),
        "no CUDA device: torch is not installed"
        if not f.get("torch")
        else f"no CUDA device: torch {f['torch']} (CUDA {f.get('torch_cuda')}) sees none",
    ),
    "cuda-bindings": lambda f: (
        bool(f.get("cuda_bindings_devices")),
        "cuda-bindings (cuda-python) not installed"
        if not f.get("cuda_bindings")
        else "no CUDA device: cuda-bindings sees none",
    ),
    "tensorrt": lambda f: (
        bool(f.get("tensorrt")),
        f"tensorrt not importable ({f.get('tensorrt_error')})",
    ),
    "onnxconverter-common": lambda f: (
        bool(f.get("onnxconverter_common")),
        f"onnxconverter_common not importable ({f.get('onnxconverter_common_error')}): no fp16 "
        "export",
    ),
    "onnxruntime-gpu": lambda f: (
        any(
            p in f.get("onnxruntime_providers", [])
            for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
        ),
        "onnxruntime has no GPU provider (the CPU build: providers "
        f"{', '.join(f.get('onnxruntime_providers', [])) or 'none'})",
    ),
    "openvino": lambda f: (
        bool(f.get("openvino")),
        f"openvino not importable ({f.get('openvino_error')})",
    ),
}


@dataclasses.dataclass(frozen=True)
class Step:
    """One command of the check: what it needs, how long it may take, what it leaves."""

    key: str
    title: str
    limit_s: int
    needs: tuple[str, ...] = ()
    # Steps that must have passed first (their artefacts are this step's input).
    after: tuple[str, ...] = ()
    # Steps of which at least one must have passed (e.g. any engine built).
    after_any: tuple[str, ...] = ()
    # The JSON report it leaves in its work folder, copied into $OUT as KEY.json.
    report: str | None = None
    # Steps that use what this one makes: it runs only when one of them can.
    consumers: tuple[str, ...] = ()


# In running order. The limits of every step together fit DEFAULT_BUDGET_S (a test checks
# it), so a machine with every package runs every step; without TensorRT the PyTorch steps
# take about half of it.
STEPS = (
    Step("versions", "versions and the GPU", 20),
    Step("gpu-tests", "GPU tests (pytest -m gpu)", 100, needs=("torch-cuda",)),
    Step(
        "training",
        "training, full width at 384x512: bf16 autocast, channels_last",
        40,
        needs=("torch-cuda",),
        report="training.json",
    ),
    Step(
        "speed-pytorch",
        "PyTorch render at 1024x1536: fp32, bf16/fp16 autocast, CUDA graph",
        40,
        needs=("torch-cuda",),
        report="speed.json",
    ),
    Step(
        "parity-pytorch",
        "PyTorch 16-bit renders against fp32 on real photos",
        25,
        needs=("torch-cuda",),
        report="parity.json",
    ),
    Step(
        "checkpoint",
        "a random full-width checkpoint for the exports",
        15,
        consumers=("engine-fp32", "engine-fp16", "onnxruntime-gpu"),
    ),
    Step(
        "export-fp32",
        "export fp32 ONNX",
        20,
        after=("checkpoint",),
        consumers=("engine-fp32", "onnxruntime-gpu"),
    ),
    Step(
        "export-fp16",
        "export fp16 ONNX",
        20,
        needs=("onnxconverter-common",),
        after=("checkpoint",),
        consumers=("engine-fp16",),
    ),
    Step(
        "engine-fp32",
        "TensorRT fp32 engine",
        60,
        needs=("tensorrt", "cuda-bindings"),
        after=("export-fp32",),
    ),
    Step(
        "engine-fp16",
        "TensorRT fp16 engine",
        60,
        needs=("tensorrt", "cuda-bindings"),
        after=("export-fp16",),
    ),
    *(
        Step(
            key,
            title,
            limit,
            needs=("tensorrt", "cuda-bindings"),
            after_any=("engine-fp32", "engine-fp16"),
            report=report,
        )
        for key, title, limit, report in (
            ("speed-engines", "TensorRT engines against PyTorch at 1024x1536", 30, "speed.json"),
            ("parity-engines", "TensorRT engines against PyTorch on photos", 20, "parity.json"),
        )
    ),
    Step(
        "onnxruntime-gpu",
        "ONNX Runtime's CUDA and TensorRT providers at 1024x1536",
        0,  # whatever the budget has left: it runs only where onnxruntime-gpu is installed
        needs=("onnxruntime-gpu", "torch-cuda"),
        after=("export-fp32",),
        report="speed.json",
    ),
)


def commands(python: str, work: Path, built: Sequence[str]) -> dict[str, list[str]]:
    """Each step's command line. ``built`` names the engine steps that passed: only their
    engines are handed on."""
    bench = [python, "-m", "dbsi.benchmarks.cli"]
    export = [python, "-m", "dbsi.export.cli"]
    cache = ["--cache", str(work / "cache")]
    checkpoint = str(work / "random.pt")
    engines = [a for key in built for a in ("--model", str(work / f"model-{key[7:]}.engine"))]
    timing = ["--no-codec", "--repeats", "20", "--warmup", "5", "--size", "1024x1536"]
    return {
        "versions": [python, "-c", VERSIONS],
        "gpu-tests": [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "-m", "gpu"]
        + [str(ROOT / "tests")],
        "training": bench
        + ["training", "--size", "384x512", "--batch", "8", "--steps", "20", "--warmup-steps"]
        + ["3", "--out", str(work / "training")],
        "speed-pytorch": bench
        + ["speed", "--pytorch-only", *timing, "--out", str(work / "speed-pytorch")]
        + cache,
        "parity-pytorch": bench
        + ["parity", "--pytorch-only", "--out", str(work / "parity-pytorch")]
        + cache,
        "checkpoint": [python, "-c", MAKE_CHECKPOINT, str(work / "cache"), checkpoint],
        "export-fp32": export
        + ["onnx", checkpoint, "-o", str(work / "model.onnx"), "--skip-checks"],
        "export-fp16": export
        + ["onnx", checkpoint, "-o", str(work / "model-fp16.onnx"), "--fp16", "--skip-checks"],
        **{
            f"engine-{precision}": export
            + ["engine", str(work / onnx), "-o", str(work / f"model-{precision}.engine")]
            + ENGINE_SHAPES
            + ["--timing-cache", str(work / "timing.cache")]
            for precision, onnx in (("fp32", "model.onnx"), ("fp16", "model-fp16.onnx"))
        },
        "speed-engines": bench
        + ["speed", "--model", checkpoint, *engines, *timing, "--out", str(work / "speed-engines")]
        + cache,
        "parity-engines": bench
        + ["parity", "--model", checkpoint, *engines, "--out", str(work / "parity-engines")]
        + cache,
        "onnxruntime-gpu": bench
        + ["speed", "--model", checkpoint, "--model", str(work / "model.onnx"), *timing]
        + ["--out", str(work / "onnxruntime-gpu")]
        + cache,
    }


MAKE_CHECKPOINT = (
    "import shutil, sys; from pathlib import Path; "
    "from dbsi.benchmarks.models import random_checkpoint; "
    "shutil.copy(random_checkpoint(Path(sys.argv[1])), sys.argv[2])"
)
ENGINE_SHAPES = ["--opt-shape", "1x1024x1536x3", "--max-shape", "1x1536x1536x3"]

VERSIONS = r"""
import platform, subprocess
print(f"python {platform.python_version()}")
import torch
cudnn = torch.backends.cudnn.version()
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {cudnn}")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"GPU {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}, "
          f"{p.multi_processor_count} SMs, bf16 {torch.cuda.is_bf16_supported()}")
try:
    from cuda.bindings import runtime as cudart
    print(f"cuda-bindings: driver {cudart.cudaDriverGetVersion()[1]}, "
          f"runtime {cudart.cudaRuntimeGetVersion()[1]}")
except ImportError as exc:
    print(f"cuda-bindings: {exc}")
print(subprocess.run(["lscpu"], capture_output=True, text=True).stdout)
"""


@dataclasses.dataclass
class Outcome:
    step: str
    title: str
    status: str  # "passed", "failed", "skipped", "cut" or "planned"
    seconds: float = 0.0
    reason: str = ""
    exit_code: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def gpu_problem() -> str | None:
    """None when nvidia-smi lists a GPU, else the reason there is none."""
    if shutil.which("nvidia-smi") is None:
        return "nvidia-smi is not on this machine"
    try:
        listed = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        return "nvidia-smi did not answer in 30 s"
    names = listed.stdout.strip()
    if listed.returncode != 0 or not names:
        said = " ".join((listed.stdout + listed.stderr).split())
        return f"nvidia-smi lists none ({said})"
    return None


def probe(python: str, env: dict[str, str]) -> dict[str, Any]:
    """What the interpreter the steps run in can import and see; on failure, an answer with
    every package missing and the reason."""
    try:
        done = subprocess.run(
            [python, "-c", PROBE], capture_output=True, text=True, timeout=120, env=env
        )
        lines = done.stdout.strip().splitlines()
        if done.returncode == 0 and lines:
            return json.loads(lines[-1])
        reason = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
        reason = str(exc)
    return {
        f"{key}_error": f"the probe failed: {reason}"
        for key in ("torch", "tensorrt", "onnxconverter_common", "openvino", "cuda_bindings")
    }


# Requirements that only a machine with an NVIDIA GPU can meet.
GPU_NEEDS = {"torch-cuda", "cuda-bindings", "tensorrt", "onnxruntime-gpu"}


def missing(step: Step, found: dict[str, Any], gpu: str | None) -> str | None:
    """Why ``step`` cannot run here for want of a package or device; None when it can."""
    reasons = []
    if gpu is not None and GPU_NEEDS.intersection(step.needs):
        reasons.append(f"no NVIDIA GPU ({gpu})")
    for need in step.needs:
        met, reason = REQUIREMENTS[need](found)
        if not met and not (gpu is not None and reason.startswith("no CUDA device")):
            reasons.append(reason)
    return "; ".join(reasons) or None


def waiting_for(step: Step, outcomes: dict[str, Outcome]) -> str | None:
    """Why ``step`` cannot run for want of an earlier step's result; None when it can."""
    for key in step.after:
        if outcomes[key].status != "passed":
            return f"{key} did not pass ({outcomes[key].status})"
    if step.after_any and not any(outcomes[k].status == "passed" for k in step.after_any):
        return f"none of {', '.join(step.after_any)} passed"
    return None


def plan(found: dict[str, Any], gpu: str | None) -> list[Outcome]:
    """Each step with "planned" or "skipped" and the reason, before anything runs: a step
    that waits for one that will not run is skipped, and so is one that only makes what no
    step here can use."""
    reasons = {step.key: missing(step, found, gpu) for step in STEPS}
    for step in reversed(STEPS):
        if step.consumers and reasons[step.key] is None:
            if all(reasons[c] is not None for c in step.consumers):
                reasons[step.key] = f"nothing here uses it ({', '.join(step.consumers)} skipped)"
    outcomes: dict[str, Outcome] = {}
    for step in STEPS:
        reason = reasons[step.key]
        if reason is None:
            blocked = [k for k in (*step.after, *step.after_any) if outcomes[k].status != "planned"]
            if (step.after and blocked) or (step.after_any and len(blocked) == len(step.after_any)):
                reason = f"{', '.join(blocked)} will not run"
        status = "planned" if reason is None else "skipped"
        outcomes[step.key] = Outcome(step.key, step.title, status, reason=reason or "")
    return list(outcomes.values())


def tree_on_path(work: Path) -> str:
    """A folder of links that maps the ``dbsi.*`` packages onto the tree (nothing is installed)
    and the PYTHONPATH that puts it, and the tree for ``tests``, first."""
    links = work / "links" / "dbsi"
    links.mkdir(parents=True)
    for package in PACKAGES:
        (links / package).symlink_to(ROOT / package)
    rest = os.environ.get("PYTHONPATH")
    return os.pathsep.join([str(work / "links"), str(ROOT), *([rest] if rest else [])])


class Log:
    """Every line of the run, to the console and to gpu-check.log."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("w", encoding="utf-8")

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        self._file.write(line + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def run_command(command: list[str], limit_s: float, env: dict[str, str], log: Log) -> int:
    """Run ``command`` with its output logged line by line; past ``limit_s`` its whole process
    group is stopped (SIGTERM, then SIGKILL 10 s later) and the exit code is 124, as
    timeout(1) reports it."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    deadline = time.monotonic() + limit_s
    timed_out = False

    def stop_on_time() -> None:
        nonlocal timed_out
        while process.poll() is None:
            if time.monotonic() > deadline:
                timed_out = True
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=stop_on_time, daemon=True)
    watcher.start()
    assert process.stdout is not None
    for line in process.stdout:
        log(line.rstrip("\n"))
    code = process.wait()
    watcher.join()
    return 124 if timed_out else code


def headline_figures(out: Path) -> dict[str, Any]:
    """The figures worth a line in the README, from the reports in ``out``."""
    figures: dict[str, Any] = {}
    for name in ("speed-pytorch", "speed-engines", "onnxruntime-gpu"):
        report = read_json(out / f"{name}.json")
        for row in report.get("rows", []):
            if row.get("io") == "model":
                figures[f"{row['backend']} {row['size']} median ms"] = round(row["median_ms"], 2)
                if row.get("peak_gpu_memory_mib") is not None:
                    figures[f"{row['backend']} peak GPU MiB"] = round(row["peak_gpu_memory_mib"])
    for name in ("parity-pytorch", "parity-engines"):
        report = read_json(out / f"{name}.json")
        for row in report.get("rows", []):
            if row.get("photo") == "all photos":
                verdict = "pass" if row.get("passed") else "FAIL"
                figures[f"{row['backend']} parity"] = f"{row['psnr_db']:.1f} dB, {verdict}"
    for row in read_json(out / "training.json").get("rows", []):
        figures["training images/s"] = round(row["images_per_s"], 1)
        if row.get("peak_gpu_memory_mib") is not None:
            figures["training peak GPU MiB"] = round(row["peak_gpu_memory_mib"])
    return figures


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    temporary = out / ".summary.json.tmp"
    temporary.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(temporary, out / "summary.json")


def print_plan(outcomes: list[Outcome], gpu: str | None, budget: int, log: Callable) -> None:
    if gpu is not None:
        log(f"no NVIDIA GPU here ({gpu}): a real run would exit 2 before any step")
    for outcome, step in zip(outcomes, STEPS):
        limit = f"{step.limit_s:>3d} s" if step.limit_s else "rest"
        if outcome.status == "planned":
            log(f"RUN      {limit}  {step.key}: {step.title}")
        else:
            log(f"SKIPPED  {limit}  {step.key}: {step.title} -- {outcome.reason}")
    planned = sum(s.limit_s for s, o in zip(STEPS, outcomes) if o.status == "planned")
    log(f"time: {planned} s of step limits planned within a budget of {budget} s")


def main(argv: Sequence[str]) -> int:
    if any(a not in ("--plan",) for a in argv):
        print(f"usage: gpu-check.sh [--plan] (unknown: {' '.join(argv)})", file=sys.stderr)
        return 2
    only_plan = "--plan" in argv
    gpu = gpu_problem()
    if gpu is not None and not only_plan:
        print(f"no NVIDIA GPU: {gpu}", file=sys.stderr)
        return 2
    budget = int(os.environ.get("GPU_CHECK_SECONDS", DEFAULT_BUDGET_S))
    started = time.monotonic()
    python = os.environ.get("PYTHON", "python3")
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    env = {**os.environ, "PYTHONPATH": tree_on_path(work), "PYTHONUNBUFFERED": "1"}
    found = probe(python, env)
    outcomes = plan(found, gpu)
    if only_plan:
        print_plan(outcomes, gpu, budget, print)
        shutil.rmtree(work, ignore_errors=True)
        return 0
    out = Path(os.environ.get("OUT") or "gpu-check").resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "gpu-check.log")
    summary: dict[str, Any] = {
        "budget_s": budget,
        "python": python,
        "environment": found,
        "steps": [o.to_dict() for o in outcomes],
        "figures": {},
    }
    try:
        print_plan(outcomes, None, budget, log)
        by_key = {o.step: o for o in outcomes}
        for index, step in enumerate(STEPS):
            outcome = by_key[step.key]
            if outcome.status == "planned":
                run_step(step, outcome, by_key, python, work, out, env, budget, started, log)
            summary["steps"][index] = outcome.to_dict()
            summary["figures"] = headline_figures(out)
            write_summary(out, summary)
        log("\n=== summary")
        for outcome in outcomes:
            extra = f" ({outcome.reason})" if outcome.reason else ""
            log(f"{outcome.status.upper():8s} {outcome.seconds:6.1f} s  {outcome.step}{extra}")
        for name, value in summary["figures"].items():
            log(f"  {name}: {value}")
        bad = [o for o in outcomes if o.status in ("failed", "cut")]
        log(f"{len(bad)} of {len(outcomes)} steps failed or were cut; reports in {out}")
        return 1 if bad else 0
    finally:
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def run_step(
    step: Step,
    outcome: Outcome,
    outcomes: dict[str, Outcome],
    python: str,
    work: Path,
    out: Path,
    env: dict[str, str],
    budget: int,
    started: float,
    log: Log,
) -> None:
    """Run one planned step and record how it went in ``outcome``."""
    log(f"\n=== {step.key}: {step.title}")
    waiting = waiting_for(step, outcomes)
    if waiting is not None:
        outcome.status, outcome.reason = "skipped", waiting
        log(f"--- {step.key}: SKIPPED, {waiting}")
        return
    left = budget - (time.monotonic() - started)
    limit = min(step.limit_s or left, left)
    if limit < MIN_STEP_S:
        outcome.status, outcome.reason = "cut", f"{left:.0f} s of the budget left"
        log(f"--- {step.key}: CUT, {outcome.reason}")
        return
    built = [k for k in ("engine-fp32", "engine-fp16") if outcomes[k].status == "passed"]
    command = commands(python, work, built)[step.key]
    step_started = time.monotonic()
    code = run_command(command, limit, env, log)
    outcome.seconds = round(time.monotonic() - step_started, 1)
    outcome.exit_code = code
    if step.key == "gpu-tests" and code == 5:
        outcome.status, outcome.reason = "skipped", "pytest collected no gpu test (exit 5)"
    elif code == 0:
        outcome.status = "passed"
    else:
        outcome.status = "failed"
        outcome.reason = "time limit" if code == 124 else f"exit {code}"
    if step.report is not None:
        report = work / step.key / step.report
        if report.is_file():
            shutil.copy(report, out / f"{step.key}.json")
    log(f"--- {step.key}: {outcome.status.upper()} in {outcome.seconds} s {outcome.reason}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
