"""ONNX Runtime's GPU providers need their libraries in the process before the session that
uses them: CUDA and cuDNN through ``onnxruntime.preload_dlls()``, TensorRT from the pip
wheels' ``tensorrt_libs`` folder (not on the loader's path). Checked on the CPU with ONNX
Runtime and the dynamic loader faked at their boundary: what is loaded, in which order, and
that it happens before the GPU session is created."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from dbsi.runtime import onnxruntime_backend
from dbsi.runtime.onnxruntime_backend import (
    OnnxRuntimeBackend,
    preload_gpu_libraries,
    tensorrt_wheel_libraries,
)
from tests.export_helpers import tiny_graph_metadata

PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.fixture
def tensorrt_wheel(tmp_path, monkeypatch) -> Path:
    """A ``tensorrt_libs`` package laid out as NVIDIA's TensorRT 10 wheel installs it."""
    folder = tmp_path / "site" / "tensorrt_libs"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    for name in (
        "libnvonnxparser.so.10",
        "libnvinfer_plugin.so.10",
        "libnvinfer.so.10",
        "libnvinfer_builder_resource.so.10.14.1",
    ):
        (folder / name).write_bytes(b"")
    monkeypatch.syspath_prepend(str(folder.parent))
    monkeypatch.delitem(sys.modules, "tensorrt_libs", raising=False)
    return folder


class FakeOrt:
    """``onnxruntime`` as the backend calls it; every call lands in ``events``."""

    def __init__(self, events: list[str], metadata) -> None:
        self.events, self.metadata = events, metadata
        self.__version__ = "1.24.1"

    def get_available_providers(self):
        return PROVIDERS

    def preload_dlls(self):
        self.events.append("preload_dlls")

    class SessionOptions:
        log_severity_level = 0
        graph_optimization_level = None

    GraphOptimizationLevel = types.SimpleNamespace(ORT_DISABLE_ALL=0)

    def InferenceSession(self, path, options, providers):  # noqa: N802 - ONNX Runtime's name
        first = providers[0] if isinstance(providers[0], str) else providers[0][0]
        self.events.append(f"session {first}")
        if first != "CPUExecutionProvider":
            raise RuntimeError("stop here: the order is what is under test")
        props = self.metadata.to_props()
        return types.SimpleNamespace(
            get_modelmeta=lambda: types.SimpleNamespace(custom_metadata_map=props)
        )


def test_the_wheel_libraries_are_found_in_dependency_order(tensorrt_wheel):
    assert [p.name for p in tensorrt_wheel_libraries()] == [
        "libnvinfer.so.10",
        "libnvinfer_plugin.so.10",
        "libnvonnxparser.so.10",
    ]


def test_without_the_wheels_nothing_is_looked_for(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt_libs", None)
    assert tensorrt_wheel_libraries() == []


def test_the_tensorrt_provider_gets_cuda_then_tensorrt_loaded_globally(tensorrt_wheel):
    events: list[str] = []

    def load(path, mode):
        global_ = mode == onnxruntime_backend.ctypes.RTLD_GLOBAL
        events.append(f"load {Path(path).name} global={global_}")

    preload_gpu_libraries(FakeOrt(events, None), "tensorrt", load)
    assert events == [
        "preload_dlls",
        "load libnvinfer.so.10 global=True",
        "load libnvinfer_plugin.so.10 global=True",
        "load libnvonnxparser.so.10 global=True",
    ]


def test_the_cuda_provider_gets_only_cuda_and_cudnn(tensorrt_wheel):
    events: list[str] = []
    preload_gpu_libraries(FakeOrt(events, None), "cuda", lambda *a, **k: events.append("load"))
    assert events == ["preload_dlls"]


def test_the_cpu_provider_loads_nothing(tensorrt_wheel):
    events: list[str] = []
    preload_gpu_libraries(FakeOrt(events, None), "cpu", lambda *a, **k: events.append("load"))
    assert events == []


def test_the_libraries_are_loaded_before_the_gpu_session_is_created(
    tensorrt_wheel, tmp_path, monkeypatch
):
    events: list[str] = []
    metadata = tiny_graph_metadata(outputs=["bokeh"])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    fake = FakeOrt(events, metadata)
    monkeypatch.setattr(onnxruntime_backend, "_import_onnxruntime", lambda: fake)
    monkeypatch.setattr(onnxruntime_backend, "gpu_label", lambda: "NVIDIA-H200")

    def dlopen(path, mode=0):
        # A full path: a library loaded from the wheel; a bare soname: a library asked for.
        events.append(f"load {Path(path).name}" if "/" in path else f"ask {path}")

    monkeypatch.setattr(onnxruntime_backend.ctypes, "CDLL", dlopen)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"graph")
    with pytest.raises(Exception, match="stop here"):
        OnnxRuntimeBackend(model, provider="tensorrt")
    assert events == [
        "session CPUExecutionProvider",  # reads the graph's metadata, nothing more
        "preload_dlls",
        "load libnvinfer.so.10",
        "load libnvinfer_plugin.so.10",
        "load libnvonnxparser.so.10",
        "ask libnvinfer.so.10",  # its version, for the engine cache's name: found loaded
        "session TensorrtExecutionProvider",
    ]
