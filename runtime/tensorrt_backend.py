"""Native TensorRT backend: a serialized engine plus its JSON sidecar, run through cuda-python.

The engine is trusted only through its sidecar (docs/ARTEFACTS.md): it must have been built for
this GPU model and this TensorRT version, and a version-compatible engine (which runs code
shipped inside it when loaded) needs an explicit ``allow_host_code``. The GPU is checked
(``dbsi.runtime.cuda_device``) before any TensorRT object exists: on a machine without a
driver, creating a TensorRT runtime fails and later calls can crash the process.

One stream, pinned host buffers (``cudaMallocHost``) and device buffers that grow to the
largest batch seen, ``set_input_shape`` / ``get_tensor_shape`` / ``set_tensor_address`` /
``execute_async_v3`` (TensorRT 10+; the bindings API is gone).
"""

from __future__ import annotations

import ctypes
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dbsi.runtime.backend import Backend, describe_shape_problem
from dbsi.runtime.contract import INPUT_NAME, TemporalFeed, graph_inputs
from dbsi.runtime.cuda_device import CudaError, cuda_call, import_cudart, local_gpu
from dbsi.runtime.errors import BackendError
from dbsi.runtime.sidecar import read_sidecar


class _PinnedBuffer:
    """Pinned host memory and device memory of the same size, grown on demand."""

    def __init__(self, cudart: Any) -> None:
        self._cudart = cudart
        self.nbytes = 0
        self.host_ptr = 0
        self.device_ptr = 0

    def reserve(self, nbytes: int) -> None:
        if nbytes <= self.nbytes:
            return
        self.free()
        self.host_ptr = cuda_call(
            self._cudart, self._cudart.cudaMallocHost(nbytes), "cudaMallocHost"
        )
        self.device_ptr = cuda_call(self._cudart, self._cudart.cudaMalloc(nbytes), "cudaMalloc")
        self.nbytes = nbytes

    def host_view(self, shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
        """The pinned host memory as a numpy array of ``shape`` (no copy)."""
        count = int(np.prod(shape)) * dtype.itemsize
        raw = np.ctypeslib.as_array(
            ctypes.cast(int(self.host_ptr), ctypes.POINTER(ctypes.c_uint8)), (count,)
        )
        return raw.view(dtype).reshape(tuple(shape))

    def free(self) -> None:
        """Free both allocations, even when freeing the first fails; then raise that error."""
        cudart, errors = self._cudart, []
        for pointer, release, what in (
            (self.device_ptr, cudart.cudaFree, "cudaFree"),
            (self.host_ptr, cudart.cudaFreeHost, "cudaFreeHost"),
        ):
            if pointer:
                try:
                    cuda_call(cudart, release(pointer), what)
                except CudaError as exc:
                    errors.append(exc)
        self.nbytes, self.host_ptr, self.device_ptr = 0, 0, 0
        if errors:
            raise errors[0]


def version_tuple(version: str) -> tuple[int, ...]:
    """``"10.14.1.48"`` -> (10, 14, 1, 48): the leading numeric parts of a version string."""
    parts = []
    for part in str(version).split("."):
        digits = "".join(itertools.takewhile(str.isdigit, part))
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def tensorrt_version_problem(built: str, installed: str, version_compatible: bool) -> str | None:
    """Why an engine built by TensorRT ``built`` cannot load in TensorRT ``installed``, or None.

    An engine loads only in the TensorRT that built it; a version-compatible one also in later
    versions, never in an older one ("engines built with newer versions do not work with older
    runtimes": NVIDIA, TensorRT 11.1 developer guide, Engine Compatibility). Asked before
    deserializing: an incompatible plan gives only None and a log line from TensorRT."""
    if version_tuple(built)[:3] > version_tuple(installed)[:3]:
        return (
            f"built with TensorRT {built}, newer than the installed TensorRT {installed}; an "
            "engine never loads in an older TensorRT: upgrade TensorRT or rebuild the engine here"
        )
    if built != installed and not version_compatible:
        return (
            f"built with TensorRT {built}, this machine has TensorRT {installed}; rebuild the "
            "engine here"
        )
    return None


class TensorRTBackend(Backend):
    """A DBSI TensorRT engine, checked against its sidecar and this machine."""

    name = "tensorrt"

    def __init__(self, path: str | Path, allow_host_code: bool = False) -> None:
        self.path = Path(path)
        self._buffers: dict[str, _PinnedBuffer] | None = None
        self._stream = None
        # Read once: the bytes whose hash the sidecar vouches for are the bytes deserialized.
        try:
            engine_bytes = self.path.read_bytes()
        except OSError as exc:
            raise BackendError(f"{self.path}: cannot read the engine ({exc.strerror})") from exc
        self.sidecar = sidecar = read_sidecar(self.path, engine_bytes)
        self.metadata = sidecar.onnx_metadata
        version_compatible = sidecar.version_compatible
        if version_compatible and not allow_host_code:
            raise BackendError(
                f"{self.path}: built version-compatible, so loading it runs code shipped inside "
                "the engine; refused unless --allow-host-code is given"
            )
        # A device must exist before any TensorRT object is created (docs/DESIGN.md section 5).
        try:
            self._cudart = cudart = import_cudart()
            gpu_name, capability = local_gpu(cudart)
        except BackendError as exc:
            raise BackendError(
                f"{self.path}: {exc}; the tensorrt backend needs one (run the .onnx with "
                "--backend onnxruntime on this machine)"
            ) from exc
        if (gpu_name, capability) != (sidecar.gpu_name, sidecar.compute_capability):
            raise BackendError(
                f"{self.path}: built for {sidecar.gpu_name} (compute capability "
                f"{sidecar.compute_capability}), this machine has {gpu_name} "
                f"({capability}); rebuild the engine here with bokeh-export engine"
            )
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise BackendError(
                "tensorrt is not installed (see the README's TensorRT install section); the "
                "tensorrt backend needs it"
            ) from exc
        problem = tensorrt_version_problem(
            sidecar.tensorrt_version, trt.__version__, version_compatible
        )
        if problem is not None:
            raise BackendError(f"{self.path}: {problem}")
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if version_compatible:
            self._runtime.engine_host_code_allowed = True
        self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self._engine is None:
            raise BackendError(f"{self.path}: TensorRT could not deserialize the engine")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise BackendError(f"{self.path}: TensorRT could not create an execution context")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if inputs != list(self.metadata.inputs):
            raise BackendError(
                f"{self.path}: expected the inputs {list(self.metadata.inputs)}, found {inputs}"
            )
        self.outputs = [n for n in names if n not in inputs]
        self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in names}
        if self._dtypes[INPUT_NAME] != np.uint8:
            raise BackendError(f"{self.path}: input '{INPUT_NAME}' is not uint8")
        self._buffers = {n: _PinnedBuffer(cudart) for n in names}
        self._stream = cuda_call(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._gpu_name = gpu_name

    @property
    def device(self) -> str:
        return self._gpu_name

    @property
    def precision(self) -> str:
        return self.sidecar.effective_precision

    device_memory_measure = (
        "TensorRT's execution-context memory (ICudaEngine.device_memory_size_v2) plus the "
        "I/O device buffers; the engine's weights are not included"
    )

    def device_memory_bytes(self) -> int | None:
        if self._engine is None or self._buffers is None:
            return None
        # device_memory_size_v2 (TensorRT 10.1+) supersedes the deprecated device_memory_size
        # (NvInferRuntime.h, ICudaEngine::getDeviceMemorySizeV2).
        context = getattr(self._engine, "device_memory_size_v2", None)
        if context is None:
            context = self._engine.device_memory_size
        return int(context) + sum(buffer.nbytes for buffer in self._buffers.values())

    @property
    def min_batch(self) -> int:
        return int(self.sidecar.profile["min"][0])

    @property
    def max_batch(self) -> int:
        return int(self.sidecar.profile["max"][0])

    def accepts(self, shape: Sequence[int]) -> str | None:
        profile = self.sidecar.profile
        reason = describe_shape_problem(shape, profile["min"][:3], profile["max"][:3])
        return None if reason is None else f"{reason} of the engine's profile"

    def _run(
        self, batch: np.ndarray, apertures: np.ndarray | None, temporal: TemporalFeed | None
    ) -> dict[str, np.ndarray]:
        cudart, context = self._cudart, self._context
        feed = graph_inputs(self.metadata.inputs, batch, apertures, temporal)
        for name, values in feed.items():
            if not context.set_input_shape(name, values.shape):
                raise RuntimeError(f"{self.path}: TensorRT refused {name} shape {values.shape}")
        shapes = {name: values.shape for name, values in feed.items()}
        for name in self.outputs:
            shapes[name] = tuple(context.get_tensor_shape(name))
            if any(dim < 0 for dim in shapes[name]):
                raise RuntimeError(
                    f"{self.path}: TensorRT left output '{name}' with unknown dimensions "
                    f"{shapes[name]} for input shape {tuple(batch.shape)}"
                )
        for name, shape in shapes.items():
            buffer = self._buffers[name]
            buffer.reserve(int(np.prod(shape)) * self._dtypes[name].itemsize)
            if not context.set_tensor_address(name, int(buffer.device_ptr)):
                raise RuntimeError(f"{self.path}: set_tensor_address({name}) failed")
        stream = self._stream
        to_device = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        to_host = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, values in feed.items():
            source = self._buffers[name]
            np.copyto(source.host_view(values.shape, self._dtypes[name]), values)
            cuda_call(
                cudart,
                cudart.cudaMemcpyAsync(
                    source.device_ptr, source.host_ptr, values.nbytes, to_device, stream
                ),
                f"cudaMemcpyAsync ({name})",
            )
        if not context.execute_async_v3(int(stream)):
            raise RuntimeError(f"{self.path}: execute_async_v3 failed")
        for name in self.outputs:
            buffer = self._buffers[name]
            nbytes = int(np.prod(shapes[name])) * self._dtypes[name].itemsize
            cuda_call(
                cudart,
                cudart.cudaMemcpyAsync(buffer.host_ptr, buffer.device_ptr, nbytes, to_host, stream),
                f"cudaMemcpyAsync ({name})",
            )
        cuda_call(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        # Copies: the pinned buffers are reused by the next batch.
        return {
            name: self._buffers[name].host_view(shapes[name], self._dtypes[name]).copy()
            for name in self.outputs
        }

    def close(self) -> None:
        """Release the engine, then free every buffer and the stream, even when one release
        fails; the first failure is raised once everything was tried."""
        buffers, stream = self._buffers, self._stream
        self._buffers, self._stream = None, None
        self._context = self._engine = self._runtime = None
        errors: list[Exception] = []
        try:
            for buffer in (buffers or {}).values():
                try:
                    buffer.free()
                except CudaError as exc:
                    errors.append(exc)
        finally:
            if stream is not None:
                try:
                    cuda_call(
                        self._cudart, self._cudart.cudaStreamDestroy(stream), "cudaStreamDestroy"
                    )
                except CudaError as exc:
                    errors.append(exc)
        if errors:
            raise errors[0]
