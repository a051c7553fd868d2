"""Which backend opens which artefact: a registry of backends by name, each with the file
suffixes it claims and the options it takes, imported only when a model needs it (ONNX Runtime
and TensorRT are heavy, optional imports). Adding a backend is one module implementing
``dbsi.runtime.backend.Backend`` and one entry here.
"""

from __future__ import annotations

import dataclasses
import importlib
import shlex
from pathlib import Path
from typing import Any

from dbsi.runtime.backend import Backend
from dbsi.runtime.contract import ONNX_SUFFIX
from dbsi.runtime.errors import BackendError
from dbsi.runtime.sidecar import ENGINE_SUFFIXES


@dataclasses.dataclass(frozen=True)
class BackendEntry:
    """A backend: where its class lives, the model files it opens by default, the keyword
    options its constructor takes (with the command-line flag each comes from)."""

    module: str
    class_name: str
    suffixes: tuple[str, ...]
    options: dict[str, str]

    def load(self) -> type[Backend]:
        return getattr(importlib.import_module(self.module), self.class_name)


REGISTRY: dict[str, BackendEntry] = {
    "onnxruntime": BackendEntry(
        "dbsi.runtime.onnxruntime_backend",
        "OnnxRuntimeBackend",
        (ONNX_SUFFIX,),
        {"provider": "--provider"},
    ),
    "tensorrt": BackendEntry(
        "dbsi.runtime.tensorrt_backend",
        "TensorRTBackend",
        ENGINE_SUFFIXES,
        {"allow_host_code": "--allow-host-code"},
    ),
    # After onnxruntime: an .onnx opens on ONNX Runtime unless OpenVINO is asked for.
    "openvino": BackendEntry(
        "dbsi.runtime.openvino_backend",
        "OpenVINOBackend",
        (ONNX_SUFFIX,),
        {"openvino_precision": "--openvino-precision"},
    ),
}
# What --backend takes.
BACKENDS = ("auto", *REGISTRY)
# Every suffix some backend opens by default, once each.
MODEL_SUFFIXES = tuple(dict.fromkeys(s for entry in REGISTRY.values() for s in entry.suffixes))
# PyTorch checkpoints (bokeh-train's best.pt / last.pt): no backend opens them.
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


def checkpoint_hint(path: Path) -> str:
    """What to do with a checkpoint given where an exported model is wanted."""
    onnx = shlex.quote(str(path.with_suffix(ONNX_SUFFIX)))
    return (
        f"{path} is a PyTorch checkpoint, not an exported model: export it, then give bokeh-run "
        f"the .onnx (add --with-weights for --save-weights): bokeh-export onnx "
        f"{shlex.quote(str(path))} -o {onnx}"
    )


def backend_for(path: Path) -> str:
    """The backend that opens ``path`` by default, by its suffix; BackendError otherwise."""
    suffix = path.suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES:
        raise BackendError(checkpoint_hint(path))
    for name, entry in REGISTRY.items():
        if suffix in entry.suffixes:
            return name
    raise BackendError(
        f"{path}: unknown model type {suffix!r} (expected {', '.join(MODEL_SUFFIXES)}); "
        f"for a model saved under another name, name its backend: --backend "
        f"{'|'.join(REGISTRY)}"
    )


def open_backend(path: str | Path, backend: str = "auto", **options: Any) -> Backend:
    """Open a model for inference with ``backend`` ("auto": by the file's suffix).

    ``options`` go to the backend that takes them (``provider`` for ONNX Runtime: "cpu",
    "cuda", "tensorrt" or None for the best present; ``allow_host_code`` for TensorRT, which
    permits version-compatible engines, whose loading runs code shipped inside the engine;
    ``openvino_precision`` for OpenVINO, "f32" or "bf16"); an option set for a backend that
    does not take it is an error. Raises BackendError."""
    path = Path(path)
    if backend not in BACKENDS:
        raise BackendError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if not path.is_file():
        raise BackendError(f"{path}: no such model file")
    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        raise BackendError(checkpoint_hint(path))
    name = backend_for(path) if backend == "auto" else backend
    entry = REGISTRY[name]
    given = {key: value for key, value in options.items() if value not in (None, False)}
    for key in given:
        if key not in entry.options:
            flag = next((e.options[key] for e in REGISTRY.values() if key in e.options), f"'{key}'")
            raise BackendError(f"{path}: {flag} does not apply to the {name} backend")
    return entry.load()(path, **given)
