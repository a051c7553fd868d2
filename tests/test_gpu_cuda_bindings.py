"""The native TensorRT backend's CUDA plumbing against the real cuda-bindings: pinned and
device buffers, the stream, the copies both ways, error codes. TensorRT itself is faked at its
API boundary (an "engine" whose execution copies its input to its output on the GPU), so this
runs on a GPU machine without TensorRT; the real engines are tested in test_runtime_tensorrt.py.
Each test skips with "no CUDA device" where cuda-bindings sees none."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from dbsi.runtime.contract import GraphMetadata
from dbsi.runtime.cuda_device import CudaError, cuda_call, local_gpu
from tests.needs import needs_cuda_bindings
from tests.test_tensorrt_on_cpu import fake_engine


@pytest.fixture
def cudart():
    from cuda.bindings import runtime

    return runtime


@needs_cuda_bindings
def test_pinned_and_device_buffers_carry_bytes_to_the_gpu_and_back(cudart):
    from dbsi.runtime.tensorrt_backend import _PinnedBuffer

    there, back = _PinnedBuffer(cudart), _PinnedBuffer(cudart)
    values = np.random.default_rng(0).integers(0, 256, (2, 37, 53, 3), dtype=np.uint8)
    try:
        for buffer in (there, back):
            buffer.reserve(values.nbytes)
        np.copyto(there.host_view(values.shape, np.dtype(np.uint8)), values)
        kinds = cudart.cudaMemcpyKind
        copies = (
            (there.device_ptr, there.host_ptr, kinds.cudaMemcpyHostToDevice),
            (back.device_ptr, there.device_ptr, kinds.cudaMemcpyDeviceToDevice),
            (back.host_ptr, back.device_ptr, kinds.cudaMemcpyDeviceToHost),
        )
        for target, source, kind in copies:
            cuda_call(cudart, cudart.cudaMemcpy(target, source, values.nbytes, kind), "copy")
        assert np.array_equal(back.host_view(values.shape, np.dtype(np.uint8)), values)
    finally:
        there.free()
        back.free()
    assert there.nbytes == 0 and there.device_ptr == 0 and there.host_ptr == 0


@needs_cuda_bindings
def test_a_buffer_grows_for_a_larger_batch_and_keeps_its_memory_for_a_smaller_one(cudart):
    from dbsi.runtime.tensorrt_backend import _PinnedBuffer

    buffer = _PinnedBuffer(cudart)
    try:
        buffer.reserve(1 << 20)
        first = buffer.device_ptr
        buffer.reserve(1 << 10)
        assert buffer.device_ptr == first and buffer.nbytes == 1 << 20
        buffer.reserve(1 << 22)
        assert buffer.nbytes == 1 << 22
    finally:
        buffer.free()


@needs_cuda_bindings
def test_a_failing_cuda_call_raises_with_the_error_name(cudart):
    with pytest.raises(CudaError, match=r"cudaMalloc failed: cudaErrorMemoryAllocation"):
        cuda_call(cudart, cudart.cudaMalloc(1 << 60), "cudaMalloc")


class CopyingContext:
    """An IExecutionContext whose ``execute_async_v3`` copies the image to ``bokeh`` and
    zeroes ``weights`` on the GPU, on the stream it is given."""

    def __init__(self, cudart) -> None:
        self.cudart, self.shapes, self.addresses = cudart, {}, {}

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        n, h, w, _ = self.shapes["image"]
        return (n, h, w, 3) if name == "bokeh" else (n, 4, h, w)

    def set_tensor_address(self, name, address):
        self.addresses[name] = address
        return True

    def execute_async_v3(self, stream):
        image = self.shapes["image"]
        nbytes = int(np.prod(image))
        weights = int(np.prod(self.get_tensor_shape("weights"))) * 4
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        copy = self.cudart.cudaMemcpyAsync(
            self.addresses["bokeh"], self.addresses["image"], nbytes, kind, stream
        )
        zero = self.cudart.cudaMemsetAsync(self.addresses["weights"], 0, weights, stream)
        return copy[0] == zero[0] == self.cudart.cudaError_t.cudaSuccess


def copying_tensorrt(cudart) -> types.SimpleNamespace:
    """The ``tensorrt`` module as the backend uses it, with a copying engine."""

    class Engine:
        names = ("image", "aperture", "bokeh", "weights")
        num_io_tensors = 4
        device_memory_size_v2 = 1 << 20

        def get_tensor_name(self, index):
            return self.names[index]

        def get_tensor_mode(self, name):
            return "INPUT" if name in ("image", "aperture") else "OUTPUT"

        def get_tensor_dtype(self, name):
            return np.float32 if name in ("aperture", "weights") else np.uint8

        def create_execution_context(self):
            return CopyingContext(cudart)

    class Runtime:
        def __init__(self, logger):
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, data):
            return Engine()

    class Logger:
        WARNING = 2

        def __init__(self, level):
            self.level = level

    return types.SimpleNamespace(
        __version__="10.14.1",
        Logger=Logger,
        Runtime=Runtime,
        TensorIOMode=types.SimpleNamespace(INPUT="INPUT"),
        nptype=lambda dtype: dtype,
    )


@needs_cuda_bindings
def test_the_native_backend_moves_each_batch_through_the_gpu_and_back(
    cudart, tmp_path, monkeypatch
):
    from dbsi.runtime.tensorrt_backend import TensorRTBackend

    monkeypatch.setitem(sys.modules, "tensorrt", copying_tensorrt(cudart))
    gpu_name, capability = local_gpu(cudart)
    metadata = GraphMetadata(
        config={
            "kernel_sizes": [5, 11, 21],
            "net_long_side": 64,
            "mode": "paper",
            "width": 0.125,
            "config_version": 1,
        },
        min_input_side=11,
        max_input_side=8192,
        outputs=["bokeh", "weights"],
        precision="fp32",
        checkpoint_sha256="0" * 64,
        toolkit_version="test",
    )
    engine = fake_engine(tmp_path, metadata, gpu_name=gpu_name, compute_capability=capability)
    rng = np.random.default_rng(1)
    with TensorRTBackend(engine) as backend:
        for shape in ((1, 64, 96, 3), (3, 120, 80, 3), (2, 64, 96, 3)):
            batch = rng.integers(0, 256, shape, dtype=np.uint8)
            out = backend.run(batch, 0.5)
            assert np.array_equal(out["bokeh"], batch)
            assert out["weights"].shape == (shape[0], 4, *shape[1:3])
            assert not out["weights"].any()
        assert backend.device_memory_bytes() > 1 << 20  # the context's and the buffers'
