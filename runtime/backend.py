"""The one small interface every inference backend implements, and the dispatch that opens one.

A backend takes a batch of decoded pixels exactly as OpenCV gives them (uint8, N x H x W x 3,
BGR) and returns the graph's outputs by name (``bokeh``: uint8 N x H x W x 3 BGR; optionally
``weights``: float32 N x (n+1) x H x W). Model facts (config, accepted sizes, precision) come
from the artefact's ``dbsi.*`` metadata, never from this code.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dbsi.runtime.contract import (
    INPUT_LAYOUT,
    MAX_BATCH,
    ONNX_FORMAT,
    ONNX_FORMAT_VERSION,
    OUTPUT_NAME,
    PRECISIONS,
    REQUIRED_KEYS,
)

BACKENDS = ("auto", "onnxruntime", "tensorrt")


class BackendError(RuntimeError):
    """The model cannot be opened here: bad artefact, missing library or device, refused engine.

    The message is one line that names the file and the problem."""


class MetadataError(BackendError, ValueError):
    """An artefact's ``dbsi.*`` metadata is missing or describes a graph this toolkit cannot
    feed. A ValueError too, since the exporter treats it as bad input."""


def check_dbsi_metadata(metadata: dict[str, str], source: str) -> dict[str, str]:
    """Return the ``dbsi.*`` entries of ``metadata`` once every one docs/ARTEFACTS.md lists is
    present and well formed; MetadataError naming ``source`` otherwise. The one validation
    shared by the exporter (``bokeh-export check/info/engine``) and every backend."""
    dbsi = {k: v for k, v in metadata.items() if k.startswith("dbsi.")}
    if dbsi.get("dbsi.format") != ONNX_FORMAT:
        raise MetadataError(
            f"{source}: not a DBSI model (no 'dbsi.format' = '{ONNX_FORMAT}' in its metadata); "
            "export it with bokeh-export"
        )
    version = dbsi.get("dbsi.format_version")
    if version != str(ONNX_FORMAT_VERSION):
        raise MetadataError(
            f"{source}: DBSI ONNX format version {version} is not supported "
            f"(this toolkit reads version {ONNX_FORMAT_VERSION})"
        )
    missing = [key for key in REQUIRED_KEYS if key not in dbsi]
    if missing:
        raise MetadataError(f"{source}: DBSI metadata lacks {', '.join(missing)}")
    for key, expected in INPUT_LAYOUT.items():
        if dbsi[key] != expected:
            raise MetadataError(f"{source}: {key} is {dbsi[key]!r}, this toolkit feeds {expected}")
    try:
        config = json.loads(dbsi["dbsi.config"])
        outputs = json.loads(dbsi["dbsi.outputs"])
        sides = int(dbsi["dbsi.min_input_side"]), int(dbsi["dbsi.max_input_side"])
    except ValueError as exc:
        raise MetadataError(f"{source}: malformed DBSI metadata ({exc})") from exc
    if not isinstance(config, dict) or "kernel_sizes" not in config:
        raise MetadataError(f"{source}: dbsi.config is not a render config")
    if not isinstance(outputs, list) or OUTPUT_NAME not in outputs:
        raise MetadataError(f"{source}: dbsi.outputs {outputs!r} does not list '{OUTPUT_NAME}'")
    if not 0 < sides[0] <= sides[1]:
        raise MetadataError(f"{source}: input side limits {sides} make no sense")
    if dbsi["dbsi.precision"] not in PRECISIONS:
        raise MetadataError(f"{source}: unknown precision {dbsi['dbsi.precision']!r}")
    return dbsi


def describe_shape_problem(
    shape: Sequence[int], low: Sequence[int], high: Sequence[int]
) -> str | None:
    """Reason why an N x H x W x C ``shape`` falls outside ``low``..``high`` (inclusive, per
    dimension), or None when it fits."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4 or shape[3] != 3:
        return f"batch shape {shape} is not N x H x W x 3"
    n, h, w, _ = shape
    if not low[0] <= n <= high[0]:
        return f"batch of {n} is outside the accepted {low[0]}..{high[0]}"
    for label, side, lo, hi in (("height", h, low[1], high[1]), ("width", w, low[2], high[2])):
        if not lo <= side <= hi:
            return f"{label} {side} is outside the accepted {lo}..{hi} (image {h}x{w})"
    return None


class Backend(abc.ABC):
    """An opened model: run batches of uint8 N x H x W x 3 BGR pixels."""

    #: e.g. "onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt"
    name: str
    #: the artefact's ``dbsi.*`` metadata (strings, JSON where ARTEFACTS.md says so)
    metadata: dict[str, str]
    #: output names, in the graph's order
    outputs: list[str]

    @property
    def config(self) -> dict[str, Any]:
        """The render config the artefact carries (``dbsi.config``)."""
        return json.loads(self.metadata["dbsi.config"])

    @property
    def precision(self) -> str:
        return self.metadata.get("dbsi.precision", "fp32")

    @property
    @abc.abstractmethod
    def device(self) -> str:
        """Where the graph runs, in words (e.g. "CPU", "NVIDIA H100 80GB HBM3")."""

    @property
    def min_batch(self) -> int:
        """Fewest pictures one ``run`` takes (an engine profile may ask for more than one)."""
        return 1

    @property
    def max_batch(self) -> int:
        """Most pictures one ``run`` takes (the exported graph's limit, or the engine
        profile's)."""
        return MAX_BATCH

    def batch_size(self, requested: int) -> int:
        """``requested`` brought within ``min_batch``..``max_batch``."""
        return max(self.min_batch, min(int(requested), self.max_batch))

    @abc.abstractmethod
    def accepts(self, shape: Sequence[int]) -> str | None:
        """None when a batch of this N x H x W x 3 shape can run, else the reason it cannot."""

    @abc.abstractmethod
    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run one uint8 N x H x W x 3 BGR batch; returns every output by name."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the session or engine and its memory."""

    def check_batch(self, batch: np.ndarray) -> None:
        """ValueError when ``batch`` is not something ``run`` can take."""
        if not isinstance(batch, np.ndarray) or batch.dtype != np.uint8:
            raise ValueError(f"{self.name}: batch must be a uint8 numpy array")
        reason = self.accepts(batch.shape)
        if reason is not None:
            raise ValueError(f"{self.name}: {reason}")

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} on {self.device}, outputs {self.outputs}>"


def open_backend(
    path: str | Path,
    backend: str = "auto",
    provider: str | None = None,
    allow_host_code: bool = False,
) -> Backend:
    """Open a model for inference.

    ``.onnx`` runs on ONNX Runtime (``provider``: "cpu", "cuda", "tensorrt" or None for the best
    one available); ``.engine`` runs on native TensorRT, loaded only with its
    ``model.engine.json`` sidecar. ``allow_host_code`` permits version-compatible engines,
    whose loading runs code shipped inside the engine. Raises BackendError.
    """
    path = Path(path)
    if backend not in BACKENDS:
        raise BackendError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if not path.is_file():
        raise BackendError(f"{path}: no such model file")
    suffix = path.suffix.lower()
    if backend == "auto":
        if suffix == ".onnx":
            backend = "onnxruntime"
        elif suffix in (".engine", ".plan", ".trt"):
            backend = "tensorrt"
        else:
            raise BackendError(
                f"{path}: unknown model type {suffix!r} (expected .onnx or .engine); "
                "name the backend with --backend"
            )
    if backend == "onnxruntime":
        from dbsi.runtime.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, provider=provider)
    if provider is not None:
        raise BackendError(
            f"{path}: --provider applies to ONNX Runtime; the tensorrt backend runs the engine "
            "natively"
        )
    from dbsi.runtime.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(path, allow_host_code=allow_host_code)
