"""cuda-python for the TensorRT paths: the one importer of the CUDA runtime bindings, the
error-code check every call needs, and the query of the local GPU that engines are matched
against (the exporter writes its answer into the sidecar, the runtime compares with it).

``cudaGetDeviceCount`` is asked before any TensorRT object exists: on a machine without a
driver, creating a TensorRT object fails and later calls can crash the process.
"""

from __future__ import annotations

from typing import Any

from dbsi.runtime.errors import BackendError

INSTALL_HINT = "pip install 'dbsi-bokeh[gpu]' on a machine with an NVIDIA driver"


class CudaError(RuntimeError):
    """A CUDA runtime call returned an error code."""


def import_cudart() -> Any:
    """The ``cuda.bindings.runtime`` module (cuda-python 12.6+); BackendError when missing."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError as exc:
        raise BackendError(f"cuda-python is not installed ({exc}); {INSTALL_HINT}") from exc
    return cudart


def _error_name(cudart: Any, err: Any) -> str:
    name = cudart.cudaGetErrorName(err)[1]
    return name.decode() if isinstance(name, bytes) else str(name)


def cuda_call(cudart: Any, result: tuple, what: str) -> Any:
    """Check the error code that every cuda-python call returns first; return the rest."""
    err, rest = result[0], result[1:]
    if err != cudart.cudaError_t.cudaSuccess:
        raise CudaError(f"{what} failed: {_error_name(cudart, err)}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def local_gpu(cudart: Any) -> tuple[str, str]:
    """Name (trailing NULs and spaces removed) and compute capability ("9.0") of CUDA device 0;
    BackendError when no device is visible."""
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count == 0:
        why = _error_name(cudart, err) if err != cudart.cudaError_t.cudaSuccess else "0 devices"
        raise BackendError(f"no CUDA GPU is visible ({why})")
    try:
        props = cuda_call(cudart, cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
    except CudaError as exc:
        raise BackendError(f"cannot query GPU 0: {exc}") from exc
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else props.name
    return str(name).rstrip("\x00").strip(), f"{props.major}.{props.minor}"
