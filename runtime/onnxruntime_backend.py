"""ONNX Runtime backend: CPU, CUDA and TensorRT execution providers.

``onnxruntime`` (CPU wheel) and ``onnxruntime-gpu`` install the same module; the providers that
this build offers decide what ``auto`` picks: TensorRT EP, then CUDA, then CPU.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dbsi.runtime.backend import Backend, BackendError, check_dbsi_metadata, describe_shape_problem
from dbsi.runtime.contract import INPUT_NAME, MAX_BATCH, OUTPUT_NAME
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


def tensorrt_cache_root() -> Path:
    """Where the TensorRT execution provider keeps its engines and timing cache, so that a
    second run does not rebuild them."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dbsi-bokeh" / "ort-tensorrt"


def tensorrt_provider_options(
    model_sha256: str, ort_version: str, precision: str, profile: Profile
) -> dict[str, object]:
    """Options for ONNX Runtime's TensorRT provider running one DBSI graph.

    - Engines go to a folder named by the ONNX file's sha256 and the ONNX Runtime version: the
      provider's own cache key covers the model's file name and tensor names but not its
      weights (``TRTGenerateId`` in onnxruntime's tensorrt_execution_provider_utils.h), so a
      re-export to the same path would otherwise load the old engine. The provider adds the
      TensorRT and CUDA versions to its key and the GPU's compute capability to the file name.
    - One explicit profile, the one ``bokeh-export engine`` defaults to: without it the
      provider builds a new engine for each new photo size; with it, a size outside the
      profile is an error (``accepts`` reports it per picture instead).
    - The timing cache is shared by every model (its file name carries the compute capability).
    - FP16 only for a graph exported as fp16: an fp32 graph stays fp32.
    """
    root = tensorrt_cache_root()
    engines = root / f"{model_sha256[:16]}-ort{ort_version}"
    engines.mkdir(parents=True, exist_ok=True)
    return {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(engines),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(root),
        "trt_fp16_enable": precision == "fp16",
        **ort_profile_options(profile),
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


def _graph_metadata(ort, path: Path) -> dict[str, str]:
    """The graph's ``dbsi.*`` metadata before the real session exists (the TensorRT provider's
    options depend on it): a CPU session without graph optimisations, which only loads."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        probe = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types per failure
        raise _load_error(path, exc) from exc
    return check_dbsi_metadata(dict(probe.get_modelmeta().custom_metadata_map), str(path))


class OnnxRuntimeBackend(Backend):
    """A DBSI ONNX graph in an ``onnxruntime.InferenceSession``."""

    def __init__(self, path: str | Path, provider: str | None = None) -> None:
        ort = _import_onnxruntime()
        self.path = Path(path)
        available = ort.get_available_providers()
        chosen = resolve_provider(provider, available)
        self._profile: Profile | None = None
        tensorrt_options = None
        if chosen == "tensorrt":
            metadata = _graph_metadata(ort, self.path)
            self._profile = build_profile(metadata)
            tensorrt_options = tensorrt_provider_options(
                file_sha256(self.path), ort.__version__, metadata["dbsi.precision"], self._profile
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
        self.metadata = check_dbsi_metadata(dict(meta), str(self.path))
        inputs = self._session.get_inputs()
        if [i.name for i in inputs] != [INPUT_NAME] or inputs[0].type != "tensor(uint8)":
            raise BackendError(
                f"{self.path}: expected one uint8 input named '{INPUT_NAME}', found "
                f"{[(i.name, i.type) for i in inputs]}"
            )
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
        self._min_side = int(self.metadata["dbsi.min_input_side"])
        self._max_side = int(self.metadata["dbsi.max_input_side"])

    @property
    def device(self) -> str:
        return "CPU" if self._provider == "cpu" else "CUDA GPU"

    @property
    def max_batch(self) -> int:
        if self._provider == "tensorrt" and self._profile is not None:
            return self._profile["max"][0]
        return MAX_BATCH

    def accepts(self, shape: Sequence[int]) -> str | None:
        if self._provider == "tensorrt" and self._profile is not None:
            low, high = self._profile["min"], self._profile["max"]
            reason = describe_shape_problem(shape, low[:3], high[:3])
            return None if reason is None else f"{reason} of the TensorRT provider's profile"
        return describe_shape_problem(
            shape,
            (1, self._min_side, self._min_side),
            (MAX_BATCH, self._max_side, self._max_side),
        )

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.check_batch(batch)
        values = self._session.run(None, {INPUT_NAME: np.ascontiguousarray(batch)})
        return dict(zip(self.outputs, values))

    def close(self) -> None:
        self._session = None
