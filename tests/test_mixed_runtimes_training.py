"""Torch training in a process where OpenVINO and ONNX Runtime have compiled models: DataLoader
workers do not inherit the runtimes' thread pools (docs/DESIGN.md section 6)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dbsi.train.data import THREAD_POOL_RUNTIMES, worker_context

REPRODUCER = Path(__file__).with_name("mixed_runtimes_training.py")


def test_workers_start_by_the_platform_default_while_no_runtime_is_loaded(monkeypatch):
    for name in THREAD_POOL_RUNTIMES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert worker_context() is None


@pytest.mark.parametrize("runtime", THREAD_POOL_RUNTIMES)
def test_workers_start_from_a_forkserver_once_a_runtime_is_loaded(monkeypatch, runtime):
    for name in THREAD_POOL_RUNTIMES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setitem(sys.modules, runtime, object())
    assert worker_context().get_start_method() == "forkserver"


@pytest.mark.slow
def test_training_survives_runtimes_that_compiled_models_in_the_same_process():
    pytest.importorskip("openvino", reason="openvino is not installed (extra 'cpu')")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    # A process of its own: the reproducer leaves both runtimes' objects as garbage on purpose.
    done = subprocess.run(
        [sys.executable, "-X", "faulthandler", str(REPRODUCER)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "worker start method: forkserver" in done.stdout
    assert "trained: 4 steps with 2 workers" in done.stdout
    assert "trained: bokeh-train phase1, 1 epoch, 1 worker" in done.stdout
