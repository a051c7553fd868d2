"""Which backend opens which artefact: a registry of backends by name, each with the file
suffixes it claims and the options it takes, imported only when a model needs it (ONNX Runtime
and TensorRT are heavy, optional imports). Adding a backend is one module implementing
``dbsi.runtime.backend.Backend`` and one entry here.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dbsi.runtime.backend import Backend
from dbsi.runtime.contract import ONNX_SUFFIX, TENSORRT_PRECISIONS
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
    # After onnxruntime: backend_for names ONNX Runtime for an .onnx; choose_backend decides.
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


def openvino_installed() -> bool:
    """Whether OpenVINO can be imported (looked up, not imported: the import is heavy)."""
    return importlib.util.find_spec("openvino") is not None


def nvidia_gpu() -> str | None:
    """GPU 0's name when the CUDA driver answers through cuda-python (the ``gpu`` extras bring
    it), else None: no driver, no device, or no cuda-python."""
    from dbsi.runtime.cuda_device import import_cudart, local_gpu

    try:
        name, _ = local_gpu(import_cudart())
    except BackendError:
        return None
    return name


def _given(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options actually set (None and False are a flag's absence)."""
    return {key: value for key, value in options.items() if value not in (None, False)}


def choose_backend(path: Path, options: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """The backend ``--backend auto`` opens ``path`` with, and why, for the run's header.

    An engine opens on TensorRT. An .onnx: an option only one ONNX backend takes (``provider``
    for ONNX Runtime, ``openvino_precision`` for OpenVINO) names that backend; else with an
    NVIDIA GPU (``nvidia_gpu``), ONNX Runtime, whose providers tensorrt > cuda > cpu pick the
    GPU, unless the graph is ``int8-cpu``, which runs on CPU kernels anyway: then, as without a
    GPU, OpenVINO when installed (its int8-cpu and fp32 renders are the fastest measured on x86
    CPUs, README "Measured"), else ONNX Runtime. BackendError for a checkpoint or an unknown
    suffix."""
    family = backend_for(path)
    candidates = [name for name, entry in REGISTRY.items() if path.suffix.lower() in entry.suffixes]
    if len(candidates) == 1:
        return family, f"auto: {path.suffix.lower()} file"
    for key in _given(options or {}):
        takers = [name for name in candidates if key in REGISTRY[name].options]
        if len(takers) == 1:
            return takers[0], f"auto: {REGISTRY[takers[0]].options[key]} is its option"
    gpu = nvidia_gpu()
    openvino = "openvino" in candidates and openvino_installed()
    precision = None
    if gpu is not None and openvino:  # only then is the graph worth reading
        from dbsi.runtime.openvino_backend import graph_precision

        precision = graph_precision(path)
    if gpu is not None and (precision is None or precision in TENSORRT_PRECISIONS):
        name, why = "onnxruntime", f"NVIDIA GPU {gpu}, providers tensorrt > cuda > cpu"
    else:
        machine = (
            "no NVIDIA GPU"
            if gpu is None
            else f"NVIDIA GPU {gpu}, but an {precision} graph runs on CPU kernels"
        )
        installed = "installed" if openvino else "not installed"
        name, why = ("openvino" if openvino else "onnxruntime"), f"{machine}, OpenVINO {installed}"
    others = " or ".join(f"--backend {other}" for other in candidates if other != name)
    return name, f"auto: {why}; {others} to override"


def open_backend(path: str | Path, backend: str = "auto", **options: Any) -> Backend:
    """Open a model for inference with ``backend`` ("auto": ``choose_backend``).

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
    name = choose_backend(path, options)[0] if backend == "auto" else backend
    entry = REGISTRY[name]
    given = _given(options)
    for key in given:
        if key not in entry.options:
            flag = next((e.options[key] for e in REGISTRY.values() if key in e.options), f"'{key}'")
            raise BackendError(f"{path}: {flag} does not apply to the {name} backend")
    return entry.load()(path, **given)
