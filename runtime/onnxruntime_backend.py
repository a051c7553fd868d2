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


def _trt_cache_dir() -> str:
    """Where the TensorRT execution provider keeps the engines it builds, so that a second run
    does not rebuild them."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "dbsi-bokeh", "ort-tensorrt")
    os.makedirs(path, exist_ok=True)
    return path


def provider_chain(provider: str | None, available: Sequence[str]) -> list:
    """The provider list to hand to ``InferenceSession``: the chosen one first, then the
    cheaper ones as fallbacks for nodes it cannot run."""
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
    chain = list(AUTO_ORDER[AUTO_ORDER.index(provider) :])
    entries: list = []
    for name in chain:
        if PROVIDERS[name] not in available:
            continue
        if name == "tensorrt":
            entries.append(
                (
                    PROVIDERS[name],
                    {"trt_engine_cache_enable": True, "trt_engine_cache_path": _trt_cache_dir()},
                )
            )
        else:
            entries.append(PROVIDERS[name])
    return entries


class OnnxRuntimeBackend(Backend):
    """A DBSI ONNX graph in an ``onnxruntime.InferenceSession``."""

    def __init__(self, path: str | Path, provider: str | None = None) -> None:
        ort = _import_onnxruntime()
        self.path = Path(path)
        chain = provider_chain(provider, ort.get_available_providers())
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: provider notices would drown the report
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=chain)
        except Exception as exc:  # onnxruntime raises its own exception types per failure
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise BackendError(
                f"{self.path}: ONNX Runtime cannot load it ({type(exc).__name__}: {first_line})"
            ) from exc
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

    def accepts(self, shape: Sequence[int]) -> str | None:
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
