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
from dbsi.runtime.backend import BackendError
from dbsi.runtime.contract import INPUT_NAME
from dbsi.runtime.cuda_device import INSTALL_HINT, import_cudart, local_gpu
from dbsi.runtime.provenance import file_sha256, toolkit_version

# The sidecar's reader (the runtime's TensorRT backend) defines its name and format; the GPU
# query is the one it compares the sidecar with.
from dbsi.runtime.tensorrt_backend import SIDECAR_FORMAT, SIDECAR_FORMAT_VERSION, sidecar_path

# Defaults cover single EBB!-sized photos best and batches of up to 4 HD frames (1920x1080 in
# either orientation); the minimum comes from the ONNX's metadata.
DEFAULT_OPT_SHAPE = (1, 1024, 1536, 3)
DEFAULT_MAX_SHAPE = (4, 2048, 2048, 3)
DEFAULT_WORKSPACE_GIB = 4.0


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
    against the ONNX's input limits; ValueError says what is wrong.

    Defaults give way to given shapes per dimension: a default min or opt never exceeds a
    given max (so ``--max-shape 2x512x512x3`` alone works), a default max never falls below a
    given min or opt."""
    smallest = int(metadata["dbsi.min_input_side"])
    largest = int(metadata["dbsi.max_input_side"])
    given = {"min": min_shape, "opt": opt_shape, "max": max_shape}
    caps = [s for s in (opt_shape, max_shape) if s]
    floors = [s for s in (min_shape, opt_shape) if s]
    low = list(
        min_shape
        or [min([d, *(s[i] for s in caps)]) for i, d in enumerate((1, smallest, smallest, 3))]
    )
    high = list(
        max_shape or [max([d, *(s[i] for s in floors)]) for i, d in enumerate(DEFAULT_MAX_SHAPE)]
    )
    mid = list(opt_shape or [min(max(d, low[i]), high[i]) for i, d in enumerate(DEFAULT_OPT_SHAPE)])
    profile = {"min": low, "opt": mid, "max": high}
    for name, shape in profile.items():
        if not smallest <= min(shape[1:3]) or max(shape[1:3]) > largest:
            origin = "" if given[name] else " (default, from the shapes given)"
            raise ValueError(
                f"{name} shape {shape}{origin}: height and width must lie in "
                f"[{smallest}, {largest}]"
            )
    if not all(a <= b <= c for a, b, c in zip(low, mid, high)):
        raise ValueError(f"profile needs min <= opt <= max in every dimension, got {profile}")
    return profile


def require_tensorrt_and_gpu() -> tuple[Any, dict[str, str]]:
    """Import TensorRT and find a GPU through cuda-python, before any TensorRT object exists.

    Returns ``(tensorrt module, {"gpu_name", "compute_capability"})`` for device 0, as the
    runtime's TensorRT backend reads them back; ``EnvironmentProblem`` with one line saying
    what is missing otherwise."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise EnvironmentProblem(f"TensorRT is not installed ({exc}); {INSTALL_HINT}") from exc
    try:
        gpu_name, capability = local_gpu(import_cudart())
    except BackendError as exc:
        raise EnvironmentProblem(str(exc)) from exc
    return trt, {"gpu_name": gpu_name, "compute_capability": capability}


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
    if config.add_optimization_profile(optimisation_profile) < 0:
        raise BuildFailed(f"{onnx_path}: TensorRT refused the optimisation profile {profile}")
    cache_path = Path(timing_cache) if timing_cache else None
    cached = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    # Held in a local: the config keeps only a pointer to it. True: a cache from another GPU or
    # TensorRT version is ignored instead of failing the build.
    cache = config.create_timing_cache(cached)
    if cache is None or not config.set_timing_cache(cache, True):
        raise BuildFailed(f"{cache_path or 'timing cache'}: TensorRT could not use it")

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
        "timing_cache_bytes_loaded": len(cached),
        "version_compatible": version_compatible,
        "onnx_sha256": file_sha256(onnx_path),
        "engine_sha256": hashlib.sha256(engine_bytes).hexdigest(),
        "onnx_metadata": onnx_metadata,
        "build_seconds": round(build_seconds, 3),
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "toolkit_version": toolkit_version(),
    }
    atomic_write_bytes(engine_path, engine_bytes)
    try:
        atomic_write_text(sidecar_path(engine_path), json.dumps(sidecar, indent=2) + "\n")
    except BaseException:
        # Never leave an engine without the sidecar that matches it.
        engine_path.unlink(missing_ok=True)
        raise
    return sidecar
