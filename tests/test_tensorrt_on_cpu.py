"""The TensorRT paths, as far as a machine without TensorRT or a GPU can check them.

Two kinds of test:
- refusals that happen before any TensorRT object exists (sidecar, hash, GPU, version), run
  against the real code with only the GPU query and the ``tensorrt`` module's version faked;
- call order and arguments against fakes of TensorRT and cuda-python at the boundary. They prove
  that our code calls the documented API in the documented order, with the documented
  arguments, and handles the documented return values (False, None, error codes). They do not
  prove that TensorRT behaves as documented: that needs the GPU tests in
  test_runtime_tensorrt.py and test_export_engine.py, which skip here with the reason.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from dbsi.export.engine import attach_timing_cache, default_timing_cache, network_flags
from dbsi.runtime import tensorrt_backend
from dbsi.runtime.cli import main
from dbsi.runtime.contract import GraphMetadata
from dbsi.runtime.cuda_device import CudaError
from dbsi.runtime.errors import BackendError
from dbsi.runtime.registry import open_backend
from dbsi.runtime.tensorrt_backend import _PinnedBuffer, tensorrt_version_problem
from tests.export_helpers import tiny_graph_metadata

GPU = ("NVIDIA H100 80GB HBM3", "9.0")


@pytest.fixture
def metadata() -> GraphMetadata:
    return tiny_graph_metadata()


def fake_engine(tmp_path: Path, metadata: GraphMetadata, **sidecar_changes: object) -> Path:
    """Bytes that are not an engine, with a sidecar describing them as bokeh-export would."""
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"serialized engine bytes")
    sidecar = {
        "format": "dbsi-engine-sidecar",
        "format_version": 1,
        "tensorrt_version": "10.14.1",
        "gpu_name": GPU[0],
        "compute_capability": GPU[1],
        "precision": "fp32",
        "tf32": False,
        "profile": {"min": [1, 38, 38, 3], "opt": [1, 768, 1024, 3], "max": [4, 2048, 2048, 3]},
        "version_compatible": False,
        "onnx_sha256": "0" * 64,
        "engine_sha256": hashlib.sha256(engine.read_bytes()).hexdigest(),
        "onnx_metadata": metadata.to_props(),
        **sidecar_changes,
    }
    (tmp_path / "model.engine.json").write_text(json.dumps(sidecar), encoding="utf-8")
    return engine


def picture(tmp_path: Path) -> Path:
    path = tmp_path / "a.png"
    ok, data = cv2.imencode(".png", np.full((64, 64, 3), 128, np.uint8))
    assert ok
    path.write_bytes(data.tobytes())
    return path


def run_cli(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


class FakeCudart:
    """cuda-python's runtime bindings as the backend calls them: every call returns a tuple
    whose first item is the error code (0 is success). ``failing`` names calls that return
    error 700; every call is recorded."""

    class cudaError_t:
        cudaSuccess = 0

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self, failing: tuple[str, ...] = ()) -> None:
        self.failing = failing
        self.calls: list[tuple[str, object]] = []
        self._next = 1000

    def _result(self, name: str, arg: object, *values: object) -> tuple:
        self.calls.append((name, arg))
        return (700,) if name in self.failing else (0, *values)

    def cudaGetErrorName(self, err):
        return (0, b"cudaErrorIllegalAddress")

    def cudaStreamCreate(self):
        return self._result("cudaStreamCreate", None, 77)

    def cudaStreamDestroy(self, stream):
        return self._result("cudaStreamDestroy", stream)

    def cudaMalloc(self, nbytes):
        self._next += 1
        return self._result("cudaMalloc", nbytes, self._next)

    def cudaMallocHost(self, nbytes):
        self._next += 1
        return self._result("cudaMallocHost", nbytes, self._next)

    def cudaFree(self, pointer):
        return self._result("cudaFree", pointer)

    def cudaFreeHost(self, pointer):
        return self._result("cudaFreeHost", pointer)


class FakeEngine:
    """An ICudaEngine with today's graph's inputs (``image`` uint8, the others float32) and
    the outputs ``bokeh`` (uint8), ``weights`` and ``temporal_maps``."""

    inputs = ("image", "aperture", "temporal_state", "temporal_mix")
    names = (*inputs, "bokeh", "weights", "temporal_maps")
    num_io_tensors = len(names)

    def get_tensor_name(self, index):
        return self.names[index]

    def get_tensor_mode(self, name):
        return "INPUT" if name in self.inputs else "OUTPUT"

    def get_tensor_dtype(self, name):
        return np.uint8 if name in ("image", "bokeh") else np.float32

    def create_execution_context(self):
        return object()


def fake_tensorrt(
    version: str, deserialized: list[bytes], engine: Callable[[], object] = FakeEngine
) -> types.SimpleNamespace:
    """The ``tensorrt`` module as the backend uses it; records what it is asked to
    deserialize, which ``engine()`` stands for."""

    class Runtime:
        def __init__(self, logger):
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, data):
            deserialized.append(data)
            return engine()

    class Logger:
        WARNING = 2

        def __init__(self, level):
            self.level = level

    return types.SimpleNamespace(
        __version__=version,
        Logger=Logger,
        Runtime=Runtime,
        TensorIOMode=types.SimpleNamespace(INPUT="INPUT"),
        nptype=lambda dtype: dtype,
    )


@pytest.fixture
def this_machine(monkeypatch):
    """This machine as the backend sees it: an H100, cuda-python (faked) and TensorRT 10.14.1
    (faked); returns (cudart, the list of byte strings TensorRT was asked to deserialize)."""
    cudart, deserialized = FakeCudart(), []
    monkeypatch.setattr(tensorrt_backend, "import_cudart", lambda: cudart)
    monkeypatch.setattr(tensorrt_backend, "local_gpu", lambda module: GPU)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("10.14.1", deserialized))
    return cudart, deserialized


# --- refusals before any TensorRT object exists ---


def test_engine_without_sidecar_is_refused_with_exit_2(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"serialized engine bytes")
    code, output = run_cli(engine, picture(tmp_path), "--out", tmp_path / "out")
    assert code == 2 and "no sidecar model.engine.json" in output


def test_version_compatible_engine_needs_allow_host_code(metadata, tmp_path):
    engine = fake_engine(tmp_path, metadata, version_compatible=True)
    code, output = run_cli(engine, picture(tmp_path), "--out", tmp_path / "out")
    assert code == 2 and "--allow-host-code" in output


def test_engine_whose_sidecar_lacks_its_hash_is_refused(metadata, tmp_path):
    engine = fake_engine(tmp_path, metadata)
    sidecar_file = tmp_path / "model.engine.json"
    sidecar = json.loads(sidecar_file.read_text())
    del sidecar["engine_sha256"]
    sidecar_file.write_text(json.dumps(sidecar))
    with pytest.raises(BackendError, match="sidecar lacks engine_sha256"):
        open_backend(engine)


def test_engine_that_does_not_match_its_sidecar_is_refused(metadata, tmp_path):
    engine = fake_engine(tmp_path, metadata, engine_sha256="f" * 64)
    with pytest.raises(BackendError, match="do not belong together"):
        open_backend(engine)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"gpu_name": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0"},
            "built for NVIDIA A100-SXM4-80GB (compute capability 8.0), this machine has "
            "NVIDIA H100 80GB HBM3 (9.0)",
        ),
        ({"compute_capability": "8.9"}, "compute capability 8.9"),
        (
            {"tensorrt_version": "10.12.0"},
            "built with TensorRT 10.12.0, this machine has TensorRT 10.14.1",
        ),
        (
            {"tensorrt_version": "10.16.1", "version_compatible": True},
            "built with TensorRT 10.16.1, newer than the installed TensorRT 10.14.1",
        ),
        ({"version_compatible": True}, "refused unless --allow-host-code is given"),
    ],
)
def test_engine_for_another_gpu_tensorrt_or_with_host_code_is_refused_before_deserializing(
    metadata, tmp_path, this_machine, change, message
):
    _, deserialized = this_machine
    engine = fake_engine(tmp_path, metadata, **change)
    with pytest.raises(BackendError, match=re.escape(message)):
        open_backend(engine, allow_host_code="--allow-host-code" not in message)
    assert deserialized == []


def test_engine_on_a_machine_without_gpu_or_cuda_python_exits_2_with_the_reason(metadata, tmp_path):
    try:
        from cuda.bindings import runtime as cudart

        count = cudart.cudaGetDeviceCount()
        if count[0] == cudart.cudaError_t.cudaSuccess and count[1] > 0:
            pytest.skip("this machine has a CUDA GPU")
    except ImportError:
        pass
    engine = fake_engine(tmp_path, metadata)
    code, output = run_cli(engine, picture(tmp_path), "--out", tmp_path / "out")
    assert code == 2
    assert "cuda-python is not installed" in output or "no CUDA GPU is visible" in output


@pytest.mark.parametrize(
    ("built", "installed", "compatible", "refused"),
    [
        ("10.14.1", "10.14.1", False, None),
        ("10.12.0.36", "10.14.1.48", False, "rebuild the engine here"),
        ("10.12.0.36", "10.14.1.48", True, None),
        ("10.16.1.11", "10.14.1.48", True, "newer than the installed"),
        ("11.0.0", "10.14.1", True, "newer than the installed"),
    ],
)
def test_an_engine_loads_only_in_its_tensorrt_or_a_later_one_when_version_compatible(
    built, installed, compatible, refused
):
    problem = tensorrt_version_problem(built, installed, compatible)
    assert (problem is None) if refused is None else (refused in problem)


# --- the backend against fakes of TensorRT and cuda-python ---


def test_the_engine_file_is_read_once_and_those_bytes_are_deserialized(
    metadata, tmp_path, this_machine, monkeypatch
):
    _, deserialized = this_machine
    engine = fake_engine(tmp_path, metadata)
    reads = []
    read_bytes = Path.read_bytes
    monkeypatch.setattr(
        Path, "read_bytes", lambda self: reads.append(self.name) or read_bytes(self)
    )
    backend = open_backend(engine)
    assert reads.count("model.engine") == 1
    assert deserialized == [b"serialized engine bytes"]
    assert backend.outputs == ["bokeh", "weights", "temporal_maps"]


def test_close_frees_every_buffer_and_the_stream_when_a_free_fails(
    metadata, tmp_path, this_machine
):
    cudart, _ = this_machine
    backend = open_backend(fake_engine(tmp_path, metadata))
    for buffer in backend._buffers.values():
        buffer.reserve(4096)
    cudart.failing = ("cudaFree",)
    cudart.calls.clear()
    with pytest.raises(CudaError, match="cudaFree failed"):
        backend.close()
    names = [name for name, _ in cudart.calls]
    buffers = len(FakeEngine.names)  # one per input and output
    assert names.count("cudaFree") == buffers and names.count("cudaFreeHost") == buffers
    assert names[-1] == "cudaStreamDestroy"
    backend.close()  # a second close does nothing
    assert [name for name, _ in cudart.calls].count("cudaStreamDestroy") == 1


def test_pinned_buffer_frees_both_allocations_even_when_one_free_fails():
    cudart = FakeCudart(failing=("cudaFree",))
    buffer = _PinnedBuffer(cudart)
    buffer.nbytes, buffer.host_ptr, buffer.device_ptr = 64, 11, 22
    with pytest.raises(CudaError, match="cudaFree failed: cudaErrorIllegalAddress"):
        buffer.free()
    assert cudart.calls == [("cudaFree", 22), ("cudaFreeHost", 11)]
    assert (buffer.nbytes, buffer.host_ptr, buffer.device_ptr) == (0, 0, 0)


# --- the engine builder against fakes of TensorRT ---


class FakeBuilderConfig:
    """IBuilderConfig's timing-cache calls: a cache made from ``foreign`` bytes is refused by
    ``set_timing_cache(..., ignore_mismatch=False)`` (returns False), as TensorRT documents for
    a cache from another device; ``damaged`` bytes make ``create_timing_cache`` raise."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def create_timing_cache(self, data: bytes):
        self.calls.append(("create_timing_cache", data))
        if data == b"damaged":
            raise RuntimeError("Serialization assertion magicTagRead == kMAGIC_TAG failed")
        return types.SimpleNamespace(data=data)

    def set_timing_cache(self, cache, ignore_mismatch):
        self.calls.append(("set_timing_cache", cache.data, ignore_mismatch))
        return not (cache.data == b"foreign" and not ignore_mismatch)


def test_a_timing_cache_of_this_gpu_is_used():
    config, said = FakeBuilderConfig(), []
    cache, loaded = attach_timing_cache(config, b"ours", "t.cache", said.append)
    assert loaded and cache.data == b"ours" and said == []
    assert config.calls == [("create_timing_cache", b"ours"), ("set_timing_cache", b"ours", False)]


@pytest.mark.parametrize("blob", [b"foreign", b"damaged"])
def test_a_timing_cache_from_elsewhere_is_replaced_by_a_fresh_one_in_one_line(blob):
    config, said = FakeBuilderConfig(), []
    cache, loaded = attach_timing_cache(config, blob, "t.cache", said.append)
    assert not loaded and cache.data == b""
    assert said == [
        "t.cache: timing cache from another GPU or TensorRT version, or damaged: "
        "starting a fresh one"
    ]
    # Never ignore_mismatch=True: that would accept a cache from another device.
    assert all(call[2] is False for call in config.calls if call[0] == "set_timing_cache")


def test_no_timing_cache_file_starts_a_fresh_one_silently():
    config, said = FakeBuilderConfig(), []
    cache, loaded = attach_timing_cache(config, b"", "t.cache", said.append)
    assert (cache.data, loaded, said) == (b"", False, [])


def test_the_default_timing_cache_name_carries_tensorrt_version_and_gpu():
    path = default_timing_cache(Path("out/model.engine"), "10.14.1.48", "9.0")
    assert path == Path("out/tensorrt-10.14.1.48-sm9.0.timing-cache")


@pytest.mark.parametrize(
    ("version", "strongly_typed_bit", "flags"),
    [("10.12.0.36", 1, 1 << 1), ("10.14.1.48", 1, 1 << 1), ("11.1.0.106", 0, 0)],
)
def test_networks_are_strongly_typed_by_flag_on_10_and_by_default_on_11(
    version, strongly_typed_bit, flags
):
    trt = types.SimpleNamespace(
        __version__=version,
        NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=strongly_typed_bit),
    )
    assert network_flags(trt) == flags


# --- ONNX Runtime's TensorRT provider: the options it is given ---


def test_tensorrt_provider_caches_engines_per_model_tensorrt_and_gpu_with_one_profile(
    metadata, tmp_path, monkeypatch
):
    from dbsi.runtime.onnxruntime_backend import tensorrt_provider_options
    from dbsi.runtime.profile import build_profile

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    profile = build_profile(metadata)

    def options(model="a", tensorrt="10.14.1", gpu="NVIDIA-H100"):
        return tensorrt_provider_options(model * 64, "1.24.1", tensorrt, gpu, profile, metadata)

    first = options()
    engines = first["trt_engine_cache_path"]
    assert Path(engines).is_dir() and Path(first["trt_timing_cache_path"]).is_dir()
    for other in (options(model="b"), options(tensorrt="10.16.1"), options(gpu="NVIDIA-L4")):
        assert other["trt_engine_cache_path"] != engines
    assert options(model="b")["trt_timing_cache_path"] == first["trt_timing_cache_path"]
    assert options(gpu="NVIDIA-L4")["trt_timing_cache_path"] != first["trt_timing_cache_path"]
    assert first["trt_engine_cache_enable"] and first["trt_timing_cache_enable"]
    # The other inputs follow the image's batch sizes; the state runs from a photo's 1 x 1
    # to the network's long side (64), with one map per blur and the sharp one (4).
    assert first["trt_profile_min_shapes"] == (
        "image:1x11x11x3,aperture:1,temporal_state:1x4x1x1,temporal_mix:1x2"
    )
    assert first["trt_profile_opt_shapes"] == (
        "image:1x1024x1536x3,aperture:1,temporal_state:1x4x64x64,temporal_mix:1x2"
    )
    assert first["trt_profile_max_shapes"] == (
        "image:4x2048x2048x3,aperture:4,temporal_state:1x4x64x64,temporal_mix:4x5"
    )


@pytest.mark.parametrize(("precision", "fp16"), [("fp32", False), ("fp16", True)])
def test_tensorrt_provider_runs_fp16_only_for_an_fp16_graph(
    metadata, tmp_path, monkeypatch, precision, fp16
):
    from dbsi.runtime.onnxruntime_backend import tensorrt_provider_options
    from dbsi.runtime.profile import build_profile

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    graph = metadata.replace(precision=precision)
    options = tensorrt_provider_options(
        "a" * 64, "1.24.1", "10.14.1", "gpu", build_profile(graph), graph
    )
    assert options["trt_fp16_enable"] is fp16


def test_provider_chain_gives_tensorrt_its_options_and_keeps_cheaper_fallbacks():
    from dbsi.runtime.onnxruntime_backend import provider_chain

    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    chain = provider_chain("tensorrt", available, {"trt_fp16_enable": False})
    assert chain == [
        ("TensorrtExecutionProvider", {"trt_fp16_enable": False}),
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert provider_chain("cuda", available) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
