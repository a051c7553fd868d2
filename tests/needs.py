"""What a test needs beyond the CPU suite, as skip marks that say what is missing.

Every optional package is probed with ``importlib.util.find_spec`` (no import at collection:
a test module must collect where the package is absent), and the GPU with the CUDA runtime
itself, so that a ``gpu`` test skips for the reason that applies on this machine:

- "no CUDA device" where torch or cuda-bindings cannot see a GPU (every CPU machine);
- "TensorRT not installed" where a GPU exists but TensorRT does not (the H200 image this
  project's GPU check runs on has torch with CUDA and cuda-bindings, and no TensorRT).
"""

from __future__ import annotations

import functools
import importlib.util

import pytest


def importable(module: str) -> bool:
    """Whether ``module`` can be imported here, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        # A parent package that is missing, or hidden (None in sys.modules).
        return False


@functools.cache
def torch_cuda_problem() -> str | None:
    """None when torch sees a CUDA device, else why not."""
    if not importable("torch"):
        return "no CUDA device: torch is not installed"
    import torch

    if not torch.cuda.is_available():
        return f"no CUDA device: torch {torch.__version__} sees none"
    return None


@functools.cache
def cuda_bindings_problem() -> str | None:
    """None when cuda-bindings sees a CUDA device, else why not."""
    if not importable("cuda.bindings"):
        return "no CUDA device: cuda-bindings (cuda-python) is not installed"
    from cuda.bindings import runtime as cudart

    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count == 0:
        return f"no CUDA device: cudaGetDeviceCount answered {err}, {count} devices"
    return None


def needs_cuda(test):
    """A ``gpu`` test that needs torch with a CUDA device."""
    problem = torch_cuda_problem()
    return pytest.mark.gpu(pytest.mark.skipif(problem is not None, reason=str(problem))(test))


def needs_cuda_bindings(test):
    """A ``gpu`` test that needs cuda-bindings with a CUDA device."""
    problem = cuda_bindings_problem()
    return pytest.mark.gpu(pytest.mark.skipif(problem is not None, reason=str(problem))(test))


def tensorrt_problem() -> str | None:
    """None when TensorRT and a CUDA device are both here, else why not (the device first:
    without one, TensorRT's absence is not the reason to give)."""
    device = cuda_bindings_problem()
    if device is not None and torch_cuda_problem() is not None:
        return device
    if not importable("tensorrt"):
        return "TensorRT not installed (extra 'gpu' or 'gpu-cu13')"
    return device


def needs_tensorrt(test):
    """A ``gpu`` test that builds or runs TensorRT engines."""
    problem = tensorrt_problem()
    return pytest.mark.gpu(pytest.mark.skipif(problem is not None, reason=str(problem))(test))


def skip_without_fp16_converter() -> None:
    """Skip the calling test or fixture where onnxconverter-common (fp16 exports) is missing."""
    if not importable("onnxconverter_common"):
        pytest.skip("onnxconverter-common not installed (the fp16 export needs it)")


needs_fp16_converter = pytest.mark.skipif(
    not importable("onnxconverter_common"),
    reason="onnxconverter-common not installed (the fp16 export needs it)",
)
