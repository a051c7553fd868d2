"""``bokeh-run`` preempted: SIGTERM (a scheduler) or SIGINT (Ctrl-C) in the middle of a batch of
full-HD pictures on the real backends ends it with 143 / 130 well inside a 30 s grace period,
leaving only whole files and no temporary one, and ``--skip-existing`` then finishes the job.
The stop watcher is also checked alone, with a main thread stuck in a call no signal can cut
short: it ends the process when its budget is spent, at once when the call would outlast the
budget, and at once on a second signal."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from dbsi.runtime.stop import STOP_SIGNALS, StopSignals, exit_status

REPO = Path(__file__).resolve().parents[1]
GRACE_S = 30  # Slurm's KillWait and Kubernetes' terminationGracePeriodSeconds by default
HD = (1080, 1920)
COUNT = 40


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    pytest.importorskip("torch", reason="the tiny model is exported from PyTorch")
    from tests.test_runtime_cli import export_tiny_model

    return export_tiny_model(tmp_path_factory.getbasetemp() / "tiny-model").path


@pytest.fixture(scope="module")
def hd_photos(tmp_path_factory) -> Path:
    """COUNT full-HD JPEGs (three different pictures, each written under several names)."""
    folder = tmp_path_factory.mktemp("hd")
    encoded = [cv2.imencode(".jpg", photo(seed))[1].tobytes() for seed in range(3)]
    for i in range(COUNT):
        (folder / f"p{i:02d}.jpg").write_bytes(encoded[i % 3])
    return folder


def photo(seed: int) -> np.ndarray:
    """A full-HD BGR picture: gradients, a block of colour and noise."""
    rng = np.random.default_rng(seed)
    height, width = HD
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    picture = np.dstack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)])
    picture[300:600, 500:1100] = rng.integers(0, 256, 3)
    picture += rng.normal(0, 6, picture.shape).astype(np.float32)
    return np.clip(picture, 0, 255).astype(np.uint8)


def start(model: Path, inputs: str, out: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    log = out.with_name(out.name + ".log")
    command = [sys.executable, "-m", "dbsi.runtime.cli", str(model), inputs, "--out", str(out)]
    command += ["--no-progress", "--batch", "4", *args]
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO)
    return process, log


def wait_for_first_output(process: subprocess.Popen, out: Path) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir()):
            return
        time.sleep(0.005)
    process.kill()
    raise AssertionError("no output appeared (or the run ended before one was seen)")


def wait_until_delivered(pid: int, signum: signal.Signals) -> None:
    """Wait while ``signum`` is pending for the process (Linux: /proc/PID/status ShdPnd): a
    signal sent while the same one is still pending is lost, and pending signals are delivered
    lowest number first, so a second signal must wait for the first to be taken."""
    status = Path(f"/proc/{pid}/status")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            lines = status.read_text().splitlines()
        except OSError:
            time.sleep(0.05)  # no /proc here: give the signal time
            return
        pending = [int(line.split()[1], 16) for line in lines if line.startswith("ShdPnd:")]
        if not pending or not pending[0] >> (int(signum) - 1) & 1:
            return
        time.sleep(0.002)


def stop_and_time(process: subprocess.Popen, *signals: signal.Signals) -> float:
    began = time.monotonic()
    for i, signum in enumerate(signals):
        if i:
            wait_until_delivered(process.pid, signals[i - 1])
        process.send_signal(signum)
    try:
        process.wait(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return time.monotonic() - began


def whole_outputs(out: Path) -> list[str]:
    """Every file under ``out``, each checked to decode whole at full HD; no temporary file."""
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.startswith(".") or ".partial" in n], names
    for name in names:
        picture = cv2.imread(str(out / name))
        assert picture is not None and picture.shape == (*HD, 3), name
    return names


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "status", "backend", "pattern"),
    [
        (signal.SIGTERM, 143, "openvino", "p*.jpg"),  # the slow CPU path, every picture
        (signal.SIGINT, 130, "onnxruntime", "p[01]*.jpg"),  # 20 of them
    ],
    ids=["SIGTERM-openvino", "SIGINT-onnxruntime"],
)
def test_a_stop_signal_leaves_whole_files_and_skip_existing_finishes(
    tiny_onnx, hd_photos, tmp_path, signum, status, backend, pattern
):
    if backend == "openvino":
        pytest.importorskip("openvino", reason="the openvino backend needs openvino")
    inputs = str(hd_photos / pattern)
    expected = sorted(p.name for p in hd_photos.glob(pattern))
    out = tmp_path / "out"
    process, log = start(tiny_onnx, inputs, out, "--backend", backend)
    wait_for_first_output(process, out)
    seconds = stop_and_time(process, signum)
    output = log.read_text()
    assert process.returncode == status, output
    assert seconds < GRACE_S / 2, f"{seconds:.1f} s to stop\n{output}"
    assert f"bokeh-run: stopped: {signum.name} received" in output, output
    left = int(re.search(r", left (\d+) in ", output)[1])
    assert left > 0, output
    written = whole_outputs(out)
    assert 1 <= len(written) < len(expected)

    again, log = start(tiny_onnx, inputs, out, "--backend", backend, "--skip-existing")
    assert again.wait(timeout=600) == 0, log.read_text()
    assert re.search(rf"failed 0, skipped {len(written)} in", log.read_text()), log.read_text()
    assert whole_outputs(out) == expected


@pytest.mark.slow
def test_a_second_signal_leaves_at_once_with_only_whole_files(tiny_onnx, hd_photos, tmp_path):
    out = tmp_path / "out"
    process, log = start(tiny_onnx, str(hd_photos / "p[01]*.jpg"), out, "--backend", "onnxruntime")
    wait_for_first_output(process, out)
    seconds = stop_and_time(process, signal.SIGTERM, signal.SIGTERM)
    output = log.read_text()
    assert process.returncode == 143, output
    assert seconds < GRACE_S / 2, f"{seconds:.1f} s to stop\n{output}"
    assert "a second SIGTERM" in output, output
    assert re.search(r", left [1-9]\d* in ", output), output
    whole_outputs(out)


# The watcher alone: a main thread stuck (as in an inference call) inside an atomic write.
STUCK = """
import sys, threading
from pathlib import Path
from dbsi.runtime.atomic import atomic_path
from dbsi.runtime.stop import StopSignals

budget, expected, folder = float(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
report = lambda signum, how: print(f"abandoned after {signum.name}: {how}", flush=True)
with StopSignals(budget_s=budget, on_abandon=report) as stop:
    with atomic_path(folder / "out.png") as tmp:
        tmp.write_bytes(b"half a picture")
        with stop.uninterruptible(None if expected == "unknown" else float(expected)):
            print("stuck", flush=True)
            threading.Event().wait()
"""


def run_stuck(tmp_path: Path, budget: float, expected: str, *signals: signal.Signals):
    process = subprocess.Popen(
        [sys.executable, "-c", STUCK, str(budget), expected, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    assert process.stdout.readline().strip() == "stuck"
    seconds = stop_and_time(process, *signals)
    output = process.stdout.read()
    assert list(tmp_path.iterdir()) == [], "the temporary file of the write is deleted"
    return process.returncode, seconds, output


def test_the_watcher_ends_a_stuck_run_when_its_budget_is_spent(tmp_path):
    code, seconds, output = run_stuck(tmp_path, 1.0, "unknown", signal.SIGTERM)
    assert code == 143, output
    assert 1.0 <= seconds < GRACE_S / 2, seconds
    assert "abandoned after SIGTERM: the run did not end within 1 s: exiting" in output


def test_a_call_that_would_outlast_the_budget_is_abandoned_at_once(tmp_path):
    code, seconds, output = run_stuck(tmp_path, 25.0, "600", signal.SIGINT)
    assert code == 130, output
    assert seconds < 10, seconds  # not the 25 s budget
    assert "(about 600 s) would not end within 25 s: abandoned" in output


def test_a_second_signal_ends_a_stuck_run_at_once(tmp_path):
    code, seconds, output = run_stuck(tmp_path, 25.0, "1", signal.SIGTERM, signal.SIGINT)
    assert code == 143, output  # the first signal's status
    assert seconds < 10, seconds
    assert "abandoned after SIGTERM: a second SIGINT" in output


def test_the_handlers_and_wakeup_fd_in_place_before_come_back_after():
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)
    with StopSignals() as stop:
        assert all(signal.getsignal(s) != before[s] for s in STOP_SIGNALS)
        assert stop.requested is None
    assert {s: signal.getsignal(s) for s in STOP_SIGNALS} == before
    assert signal.set_wakeup_fd(wakeup) == wakeup


def test_exit_status_is_the_shells_code_for_the_signal():
    assert exit_status(signal.SIGTERM) == 143 and exit_status(signal.SIGINT) == 130
