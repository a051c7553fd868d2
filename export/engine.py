"""ONNX -> TensorRT engine plus its JSON sidecar (docs/ARTEFACTS.md), with the TensorRT 10.x /
11.x Python API (DESIGN.md section 4): strongly typed network, ONNX parser with its errors
reported, workspace limit, one optimisation profile for input ``image``, TF32 off for fp32
parity, a timing cache file reused across builds, ``build_serialized_network``.

TensorRT and cuda-python are imported lazily and only after ``require_tensorrt_and_gpu``: on a
machine without a GPU, creating a TensorRT object fails or segfaults. No torch here.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from dbsi.export.metadata import read_metadata
from dbsi.runtime.atomic import atomic_write_bytes, atomic_write_text
from dbsi.runtime.contract import INPUT_NAME
from dbsi.runtime.provenance import file_sha256, toolkit_version

# The sidecar's reader (the runtime's TensorRT backend) defines its name and format.
from dbsi.runtime.tensorrt_backend import SIDECAR_FORMAT, SIDECAR_FORMAT_VERSION, sidecar_path

# Defaults cover single EBB!-sized photos best and batches of up to 4 HD frames (1920x1080 in
# either orientation); the minimum comes from the ONNX's metadata.
DEFAULT_OPT_SHAPE = (1, 1024, 1536, 3)
DEFAULT_MAX_SHAPE = (4, 2048, 2048, 3)
DEFAULT_WORKSPACE_GIB = 4.0
INSTALL_HINT = (
    "install the gpu extra on a machine with an NVIDIA driver: pip install 'dbsi-bokeh[gpu]'"
)


class EnvironmentProblem(RuntimeError):
    """TensorRT, cuda-python or a GPU is missing: nothing can be built here."""


class BuildFailed(RuntimeError):
    """TensorRT could not parse the ONNX or build the engine."""


def parse_shape(text: str) -> tuple[int, int, int, int]:
    """``"NxHxWx3"`` -> (N, H, W, 3); ValueError on anything else."""
    try:
        dims = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 4 or dims[3] != 3 or min(dims) < 1:
        raise ValueError(
            f"shape {text!r} is not NxHxWx3 with positive N, H, W (e.g. 1x1024x1536x3)"
        )
    return dims  # type: ignore[return-value]


def build_profile(
    metadata: dict[str, str],
    min_shape: tuple[int, ...] | None = None,
    opt_shape: tuple[int, ...] | None = None,
    max_shape: tuple[int, ...] | None = None,
) -> dict[str, list[int]]:
    """The optimisation profile for ``image``: the given shapes, defaults for the rest, checked
    against the ONNX's input limits; ValueError says what is wrong."""
    smallest = int(metadata["dbsi.min_input_side"])
    largest = int(metadata["dbsi.max_input_side"])
    profile = {
        "min": list(min_shape or (1, smallest, smallest, 3)),
        "opt": list(opt_shape or DEFAULT_OPT_SHAPE),
        "max": list(max_shape or DEFAULT_MAX_SHAPE),
    }
    for name, shape in profile.items():
        if not smallest <= min(shape[1:3]) or max(shape[1:3]) > largest:
            raise ValueError(
                f"{name} shape {shape}: height and width must lie in [{smallest}, {largest}]"
            )
    if not all(a <= b <= c for a, b, c in zip(profile["min"], profile["opt"], profile["max"])):
        raise ValueError(f"profile needs min <= opt <= max in every dimension, got {profile}")
    return profile


def _cuda_runtime():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart  # cuda-python before 12.6 keeps the runtime here
    return cudart


def require_tensorrt_and_gpu() -> tuple[Any, dict[str, str]]:
    """Import TensorRT and find a GPU through cuda-python, before any TensorRT object exists.

    Returns ``(tensorrt module, {"gpu_name", "compute_capability"})`` for device 0;
    ``EnvironmentProblem`` with one line saying what is missing otherwise."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise EnvironmentProblem(f"TensorRT is not installed ({exc}); {INSTALL_HINT}") from exc
    try:
        cudart = _cuda_runtime()
    except ImportError as exc:
        raise EnvironmentProblem(f"cuda-python is not installed ({exc}); {INSTALL_HINT}") from exc
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess:
        raise EnvironmentProblem(f"no usable NVIDIA GPU: cudaGetDeviceCount returned {err}")
    if count == 0:
        raise EnvironmentProblem("no NVIDIA GPU found (cudaGetDeviceCount returned 0)")
    err, props = cudart.cudaGetDeviceProperties(0)
    if err != cudart.cudaError_t.cudaSuccess:
        raise EnvironmentProblem(f"cannot query GPU 0: cudaGetDeviceProperties returned {err}")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else props.name
    # Normalised as the runtime's TensorRT backend does, which compares it with the sidecar's.
    gpu = {
        "gpu_name": name.rstrip("\x00").strip(),
        "compute_capability": f"{props.major}.{props.minor}",
    }
    return trt, gpu


def _parse_onnx(trt: Any, builder: Any, logger: Any, onnx_path: Path) -> tuple[Any, Any]:
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildFailed(f"{onnx_path}: TensorRT cannot parse the ONNX: {' | '.join(errors)}")
    # The parser must outlive the network: it owns the weights the network points at.
    return network, parser


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    profile: dict[str, list[int]],
    workspace_bytes: int,
    timing_cache: str | Path | None,
    tf32: bool = False,
    version_compatible: bool = False,
) -> dict[str, Any]:
    """Build ``engine_path`` and ``<engine_path>.json`` from the ONNX at ``onnx_path``;
    returns the sidecar. Raises ``EnvironmentProblem`` (nothing can be built here),
    ``ValueError`` (the ONNX is not ours) or ``BuildFailed``."""
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    onnx_metadata = read_metadata(onnx_path)
    trt, gpu = require_tensorrt_and_gpu()

    started = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _parse_onnx(trt, builder, logger, onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if not tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    if version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    optimisation_profile = builder.create_optimization_profile()
    optimisation_profile.set_shape(INPUT_NAME, profile["min"], profile["opt"], profile["max"])
    config.add_optimization_profile(optimisation_profile)
    cache_path = Path(timing_cache) if timing_cache else None
    cached = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    # Held in a local: the config keeps only a pointer to it. True: a cache from another GPU or
    # TensorRT version is ignored instead of failing the build.
    cache = config.create_timing_cache(cached)
    config.set_timing_cache(cache, True)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildFailed(f"{onnx_path}: TensorRT failed to build the engine (see its log above)")
    engine_bytes = bytes(serialized)
    build_seconds = time.perf_counter() - started

    if cache_path is not None:
        atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))
    sidecar = {
        "format": SIDECAR_FORMAT,
        "format_version": SIDECAR_FORMAT_VERSION,
        "tensorrt_version": trt.__version__,
        **gpu,
        "precision": onnx_metadata["dbsi.precision"],
        "tf32": tf32,
        "profile": profile,
        "workspace_bytes": int(workspace_bytes),
        "version_compatible": version_compatible,
        "onnx_sha256": file_sha256(onnx_path),
        "engine_sha256": hashlib.sha256(engine_bytes).hexdigest(),
        "onnx_metadata": onnx_metadata,
        "build_seconds": round(build_seconds, 3),
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "toolkit_version": toolkit_version(),
    }
    atomic_write_bytes(engine_path, engine_bytes)
    atomic_write_text(sidecar_path(engine_path), json.dumps(sidecar, indent=2) + "\n")
    return sidecar


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The sidecar of an engine (pass the engine or the sidecar itself) for display; ValueError
    naming the file when it is missing or not ours. Unlike the runtime's loader it needs no
    engine file next to it."""
    path = Path(path)
    json_path = path if path.suffix == ".json" else sidecar_path(path)
    if not json_path.is_file():
        raise ValueError(f"{path}: no engine sidecar at {json_path}")
    try:
        sidecar = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{json_path}: not a JSON sidecar ({exc})") from exc
    if not isinstance(sidecar, dict) or sidecar.get("format") != SIDECAR_FORMAT:
        raise ValueError(f"{json_path}: not a DBSI engine sidecar (no '{SIDECAR_FORMAT}' format)")
    if sidecar.get("format_version") != SIDECAR_FORMAT_VERSION:
        raise ValueError(
            f"{json_path}: sidecar format version {sidecar.get('format_version')} is not "
            f"supported (this toolkit reads version {SIDECAR_FORMAT_VERSION})"
        )
    return sidecar
