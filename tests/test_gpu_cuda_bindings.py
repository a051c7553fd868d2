"""The native TensorRT backend's CUDA plumbing against the real cuda-bindings: pinned and
device buffers, the stream, the copies both ways, error codes. TensorRT itself is faked at its
API boundary (an "engine" whose execution copies its input to its output on the GPU), so this
runs on a GPU machine without TensorRT; the real engines are tested in test_runtime_tensorrt.py.
Each test skips with "no CUDA device" where cuda-bindings sees none."""

from __future__ import annotations

import functools
import sys

import numpy as np
import pytest

from dbsi.runtime.cuda_device import CudaError, cuda_call, local_gpu
from tests.export_helpers import tiny_graph_metadata
from tests.needs import needs_cuda_bindings
from tests.test_tensorrt_on_cpu import FakeEngine, fake_engine, fake_tensorrt


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


class CopyingEngine(FakeEngine):
    """The fake engine of the CPU tests, executed for real: its context copies on the GPU."""

    device_memory_size_v2 = 1 << 20

    def __init__(self, cudart) -> None:
        self.cudart = cudart

    def create_execution_context(self):
        return CopyingContext(self.cudart)


@needs_cuda_bindings
def test_the_native_backend_moves_each_batch_through_the_gpu_and_back(
    cudart, tmp_path, monkeypatch
):
    from dbsi.runtime.tensorrt_backend import TensorRTBackend

    copying = functools.partial(CopyingEngine, cudart)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("10.14.1", [], copying))
    gpu_name, capability = local_gpu(cudart)
    engine = fake_engine(
        tmp_path, tiny_graph_metadata(), gpu_name=gpu_name, compute_capability=capability
    )
    rng = np.random.default_rng(1)
    with TensorRTBackend(engine) as backend:
        for shape in ((1, 64, 96, 3), (3, 120, 80, 3), (2, 64, 96, 3)):
            batch = rng.integers(0, 256, shape, dtype=np.uint8)
            out = backend.run(batch, 0.5)
            assert np.array_equal(out["bokeh"], batch)
            assert out["weights"].shape == (shape[0], 4, *shape[1:3])
            assert not out["weights"].any()
        assert backend.device_memory_bytes() > 1 << 20  # the context's and the buffers'
