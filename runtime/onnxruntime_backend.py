"""ONNX Runtime backend: CPU, CUDA and TensorRT execution providers.

``onnxruntime`` (CPU wheel) and ``onnxruntime-gpu`` install the same module; the providers that
this build offers decide what ``auto`` picks: TensorRT EP, then CUDA, then CPU.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dbsi.runtime.backend import Backend, describe_shape_problem
from dbsi.runtime.contract import (
    INPUT_DTYPES,
    MAX_BATCH,
    OUTPUT_NAME,
    GraphMetadata,
    TemporalFeed,
    graph_inputs,
)
from dbsi.runtime.cuda_device import import_cudart, local_gpu
from dbsi.runtime.errors import BackendError
from dbsi.runtime.profile import Profile, build_profile, ort_profile_options
from dbsi.runtime.provenance import file_sha256

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
# Preference for ``provider=None``: fastest first.
AUTO_ORDER = ("tensorrt", "cuda", "cpu")


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendError(
            "onnxruntime is not installed: pip install 'dbsi-bokeh[cpu]' (or [gpu] for "
            "onnxruntime-gpu and TensorRT)"
        ) from exc
    return onnxruntime


# TensorRT's libraries that the TensorRT provider links, in dependency order (the plugin
# library and the ONNX parser both need libnvinfer).
TENSORRT_LIBRARIES = ("libnvinfer.so", "libnvinfer_plugin.so", "libnvonnxparser.so")


def tensorrt_wheel_libraries() -> list[Path]:
    """TensorRT's shared libraries as NVIDIA's pip wheels install them (the ``tensorrt_libs``
    package of ``tensorrt-cu12``/``tensorrt-cu13``), in ``TENSORRT_LIBRARIES`` order; empty
    when those wheels are not installed (a system TensorRT is found by the loader itself)."""
    try:
        spec = importlib.util.find_spec("tensorrt_libs")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = []
    for stem in TENSORRT_LIBRARIES:
        # libnvinfer.so.10 (the soname the provider asks for), not the versioned file behind it
        found.extend(sorted(p for p in folder.glob(f"{stem}.*") if p.name.count(".") == 2))
    return found


def preload_gpu_libraries(
    ort: Any, provider: str, load: Callable[..., object] | None = None
) -> list[str]:
    """Load the libraries the GPU providers link before the session that needs them; returns
    what was loaded, in order.

    - CUDA and cuDNN: ``onnxruntime.preload_dlls()`` (onnxruntime-gpu 1.21+), which loads them
      from the ``nvidia-*`` wheels or a compatible torch (ONNX Runtime's CUDA execution provider
      page, "Preload DLLs").
    - TensorRT from pip lives in ``site-packages/tensorrt_libs``, which is not on the loader's
      path, so the TensorRT provider fails to load and ONNX Runtime falls back to CUDA
      (microsoft/onnxruntime#18597, #13501). Loaded here by full path with RTLD_GLOBAL, the
      provider's own request for ``libnvinfer.so.10`` finds the library already in the process
      (the loader matches loaded libraries by soname).
    """
    loaded: list[str] = []
    if provider not in ("cuda", "tensorrt"):
        return loaded
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
        loaded.append("onnxruntime.preload_dlls()")
    if provider == "tensorrt":
        load = load or ctypes.CDLL
        for library in tensorrt_wheel_libraries():
            load(str(library), mode=ctypes.RTLD_GLOBAL)
            loaded.append(str(library))
    return loaded


def tensorrt_cache_root() -> Path:
    """Where the TensorRT execution provider keeps its engines and timing cache, so that a
    second run does not rebuild them."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dbsi-bokeh" / "ort-tensorrt"


def installed_tensorrt_version() -> str:
    """The TensorRT libraries' version: libnvinfer's own answer (``getInferLibVersion``,
    (major * 100 + minor) * 100 + patch, NvInferRuntimeBase.h) when the loader finds it, else
    the installed TensorRT package's version, else "unknown"."""
    try:
        code = int(ctypes.CDLL("libnvinfer.so.10").getInferLibVersion())
        return f"{code // 10000}.{code // 100 % 100}.{code % 100}"
    except (OSError, AttributeError):
        pass
    for package in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"):
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def gpu_label() -> str:
    """GPU 0's name for cache folder names (cuda-python when installed), else "unknown-gpu"."""
    try:
        name, _ = local_gpu(import_cudart())
    except BackendError:
        return "unknown-gpu"
    return re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-")


def tensorrt_provider_options(
    model_sha256: str,
    ort_version: str,
    tensorrt_version: str,
    gpu: str,
    profile: Profile,
    metadata: GraphMetadata,
) -> dict[str, object]:
    """Options for ONNX Runtime's TensorRT provider running one DBSI graph.

    - Engines go to a folder named by the ONNX file's sha256, the ONNX Runtime and installed
      TensorRT versions and the GPU. The provider's own cache key covers the model's file name
      and tensor names, not its weights, and only the TensorRT version it was compiled against
      (``TRTGenerateId`` in onnxruntime's tensorrt_execution_provider_utils.h): a re-export to
      the same path would load the old engine, and after a TensorRT upgrade it fails to
      deserialize the old one instead of rebuilding it.
    - One explicit profile, the one ``bokeh-export engine`` defaults to: without it the
      provider builds a new engine for each new photo size; with it, a size outside the
      profile is an error (the backend routes such pictures elsewhere, see ``accepts``).
    - A timing cache per TensorRT version and GPU, shared by every model.
    - FP16 only for a graph exported as fp16: an fp32 graph stays fp32. (The provider builds a
      weakly typed network, so TensorRT may also run the layers the fp16 export kept in fp32
      at fp16: parity is for ``bokeh-bench parity`` to judge on the GPU.)
    """
    root = tensorrt_cache_root()
    machine = f"trt{tensorrt_version}-{gpu}"
    engines = root / f"{model_sha256[:16]}-ort{ort_version}-{machine}"
    timing = root / f"timing-{machine}"
    for folder in (engines, timing):
        folder.mkdir(parents=True, exist_ok=True)
    return {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(engines),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(timing),
        "trt_fp16_enable": metadata.precision == "fp16",
        # Q/DQ graphs need the int8 flag on this provider (microsoft/onnxruntime#13381);
        # their scales come from the graph, no calibration table is involved.
        "trt_int8_enable": metadata.precision == "int8-tensorrt",
        **ort_profile_options(profile, metadata),
    }


def resolve_provider(provider: str | None, available: Sequence[str]) -> str:
    """The provider to run on: ``provider``, or the fastest available for None."""
    if provider is None:
        provider = next(p for p in AUTO_ORDER if PROVIDERS[p] in available)
    if provider not in PROVIDERS:
        raise BackendError(f"provider {provider!r} is not one of {', '.join(PROVIDERS)}")
    if PROVIDERS[provider] not in available:
        names = ", ".join(k for k, v in PROVIDERS.items() if v in available)
        raise BackendError(
            f"provider {provider!r} is not available in this onnxruntime (available: {names}); "
            "GPU providers need onnxruntime-gpu and a CUDA driver"
        )
    return provider


def provider_chain(
    provider: str, available: Sequence[str], tensorrt_options: dict | None = None
) -> list:
    """The provider list to hand to ``InferenceSession``: ``provider`` first, then the cheaper
    available ones as fallbacks for nodes it cannot run; TensorRT gets ``tensorrt_options``."""
    names = AUTO_ORDER[AUTO_ORDER.index(provider) :]
    return [
        (PROVIDERS[name], tensorrt_options or {}) if name == "tensorrt" else PROVIDERS[name]
        for name in names
        if PROVIDERS[name] in available
    ]


def _load_error(path: Path, exc: Exception) -> BackendError:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return BackendError(f"{path}: ONNX Runtime cannot load it ({type(exc).__name__}: {first_line})")


def _graph_metadata(ort, path: Path) -> GraphMetadata:
    """The graph's ``dbsi.*`` metadata before the real session exists (the TensorRT provider's
    options depend on it): a CPU session without graph optimisations, which only loads."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        probe = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types per failure
        raise _load_error(path, exc) from exc
    return GraphMetadata.from_props(probe.get_modelmeta().custom_metadata_map, str(path))


class OnnxRuntimeBackend(Backend):
    """A DBSI ONNX graph in an ``onnxruntime.InferenceSession``."""

    # Measured on the 2-core EPYC at 1024x1536: the first three calls on a shape run slower
    # (the int8 graph's 2nd and 3rd took 1.5-2.1 s, then 1.25-1.3 s each; fp32 settles a call
    # earlier), so a benchmark's warm-up must cover them.
    warmup_calls = 3

    def __init__(self, path: str | Path, provider: str | None = None) -> None:
        ort = _import_onnxruntime()
        self.path = Path(path)
        available = ort.get_available_providers()
        chosen = resolve_provider(provider, available)
        self._profile: Profile | None = None
        tensorrt_options = None
        if chosen == "tensorrt":
            metadata = _graph_metadata(ort, self.path)
            if not metadata.for_tensorrt:
                # An int8-cpu graph's uint8 tensors between layers are what TensorRT refuses;
                # it is made for ONNX Runtime's CPU kernels.
                if provider == "tensorrt":
                    raise BackendError(
                        f"{self.path}: an {metadata.precision} graph runs on ONNX Runtime's CPU "
                        "kernels, not on TensorRT (export --int8 tensorrt for TensorRT)"
                    )
                chosen = "cpu"
        try:
            # Before the TensorRT version is asked of libnvinfer and before the session.
            preload_gpu_libraries(ort, chosen)
        except OSError as exc:
            raise BackendError(
                f"{self.path}: cannot load the {chosen} provider's libraries ({exc})"
            ) from exc
        if chosen == "tensorrt":
            self._profile = build_profile(metadata)
            tensorrt_options = tensorrt_provider_options(
                file_sha256(self.path),
                ort.__version__,
                installed_tensorrt_version(),
                gpu_label(),
                self._profile,
                metadata,
            )
        chain = provider_chain(chosen, available, tensorrt_options)
        session_options = ort.SessionOptions()
        # Errors only: provider notices would drown the report.
        session_options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(self.path), session_options, providers=chain)
        except Exception as exc:  # onnxruntime raises its own exception types per failure
            raise _load_error(self.path, exc) from exc
        meta = self._session.get_modelmeta().custom_metadata_map
        self.metadata = GraphMetadata.from_props(meta, str(self.path))
        inputs = [(i.name, i.type) for i in self._session.get_inputs()]
        onnx_types = {"uint8": "tensor(uint8)", "float32": "tensor(float)"}
        expected = [(name, onnx_types[INPUT_DTYPES[name]]) for name in self.metadata.inputs]
        if inputs != expected:
            raise BackendError(f"{self.path}: expected the inputs {expected}, found {inputs}")
        self.outputs = [o.name for o in self._session.get_outputs()]
        if OUTPUT_NAME not in self.outputs:
            raise BackendError(f"{self.path}: the graph has no 'bokeh' output ({self.outputs})")
        active = self._session.get_providers()[0]
        if provider is not None and active != PROVIDERS[provider]:
            raise BackendError(
                f"{self.path}: ONNX Runtime could not start the {provider} provider "
                f"(it fell back to {active}); check the CUDA/TensorRT libraries"
            )
        self._provider = next(k for k, v in PROVIDERS.items() if v == active)
        self.name = f"onnxruntime-{self._provider}"
        if self._provider != "cpu":
            self.device_memory_measure = "not reported by ONNX Runtime (no per-session figure)"
        self._min_side = self.metadata.min_input_side
        self._max_side = self.metadata.max_input_side
        # Chosen automatically, the TensorRT provider hands pictures outside its profile (a
        # 12 MP photo against the 2048-pixel default) to a CUDA session made on first need;
        # asked for by name, it keeps to its profile and refuses them one by one.
        self._fallback_chain = None
        if provider is None and self._provider == "tensorrt" and PROVIDERS["cuda"] in available:
            self._fallback_chain = provider_chain("cuda", available)
        self._fallback = None
        self._ort, self._session_options = ort, session_options

    @property
    def device(self) -> str:
        return "CPU" if self._provider == "cpu" else "CUDA GPU"

    @property
    def max_batch(self) -> int:
        if self._provider == "tensorrt" and self._profile is not None:
            return self._profile["max"][0]
        return MAX_BATCH

    def _outside_profile(self, shape: Sequence[int]) -> str | None:
        """Why the TensorRT provider's profile does not take ``shape``; None when it does (or
        when the TensorRT provider is not running)."""
        if self._provider != "tensorrt" or self._profile is None:
            return None
        low, high = self._profile["min"], self._profile["max"]
        reason = describe_shape_problem(shape, low[:3], high[:3])
        return None if reason is None else f"{reason} of the TensorRT provider's profile"

    def accepts(self, shape: Sequence[int]) -> str | None:
        reason = self._outside_profile(shape)
        if reason is not None and self._fallback_chain is None:
            return reason
        return describe_shape_problem(
            shape,
            (1, self._min_side, self._min_side),
            (MAX_BATCH, self._max_side, self._max_side),
        )

    def _run(
        self, batch: np.ndarray, apertures: np.ndarray | None, temporal: TemporalFeed | None
    ) -> dict[str, np.ndarray]:
        session = self._session
        if self._fallback_chain is not None and self._outside_profile(batch.shape) is not None:
            if self._fallback is None:
                self._fallback = self._ort.InferenceSession(
                    str(self.path), self._session_options, providers=self._fallback_chain
                )
            session = self._fallback
        values = session.run(None, graph_inputs(self.metadata.inputs, batch, apertures, temporal))
        return dict(zip(self.outputs, values))

    def close(self) -> None:
        self._session = self._fallback = None
