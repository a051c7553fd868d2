"""ONNX -> TensorRT engine plus its JSON sidecar (docs/ARTEFACTS.md), with the TensorRT 10.x /
11.x Python API (docs/DESIGN.md section 5): strongly typed network, ONNX parser with its errors
reported, workspace limit, one optimisation profile (for ``image``, and for ``aperture`` with
the same batch sizes), TF32 off for fp32 parity, a timing cache file reused across builds,
``build_serialized_network``.

TensorRT and cuda-python are imported lazily and only after ``require_tensorrt_and_gpu``: on a
machine without a GPU, creating a TensorRT object fails or segfaults. No torch here.
"""

from __future__ import annotations

import datetime
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dbsi.export.interrupt import hold_signals
from dbsi.export.metadata import read_metadata
from dbsi.runtime.atomic import atomic_path, atomic_write_bytes
from dbsi.runtime.contract import GraphMetadata
from dbsi.runtime.cuda_device import INSTALL_HINT, import_cudart, local_gpu
from dbsi.runtime.errors import BackendError
from dbsi.runtime.profile import Profile, input_shapes
from dbsi.runtime.provenance import file_sha256, toolkit_version

# The sidecar's reader (the runtime's TensorRT backend) defines its name and format; the GPU
# query is the one it compares the sidecar with.
from dbsi.runtime.sidecar import EngineSidecar, write_sidecar
from dbsi.runtime.tensorrt_backend import version_tuple

DEFAULT_WORKSPACE_GIB = 4.0


class EnvironmentProblem(RuntimeError):
    """TensorRT, cuda-python or a GPU is missing: nothing can be built here."""


class BuildFailed(RuntimeError):
    """TensorRT could not parse the ONNX or build the engine."""


def tensorrt_graph_metadata(onnx_path: str | Path) -> GraphMetadata:
    """The ONNX's metadata, once it is a graph TensorRT can build; ValueError otherwise (not
    ours, or the int8 flavour for ONNX Runtime's CPU kernels)."""
    metadata = read_metadata(onnx_path)
    if not metadata.for_tensorrt:
        raise ValueError(
            f"{onnx_path}: a {metadata.precision} graph has uint8 activations, which TensorRT "
            "refuses; export the TensorRT flavour with --int8 tensorrt"
        )
    return metadata


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


def network_flags(trt: Any) -> int:
    """``create_network`` flags for a strongly typed network (precision from the ONNX's types).

    TensorRT 10.12+ needs ``STRONGLY_TYPED``; TensorRT 11 makes every network strongly typed and
    deprecates the flag, "retained for API compatibility but is ignored" (NvInfer.h v11.1,
    NetworkDefinitionCreationFlag), with its bit moved from 1 to 0: no flag there."""
    if version_tuple(trt.__version__)[:1] >= (11,):
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def _parse_onnx(trt: Any, builder: Any, logger: Any, onnx_path: Path) -> tuple[Any, Any]:
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildFailed(f"{onnx_path}: TensorRT cannot parse the ONNX: {' | '.join(errors)}")
    # The parser must outlive the network: it owns the weights the network points at.
    return network, parser


def default_timing_cache(engine_path: Path, tensorrt_version: str, capability: str) -> Path:
    """``tensorrt-<version>-sm<capability>.timing-cache`` next to the engine: a timing cache
    holds no readable record of the GPU or TensorRT that made it, so the name carries both."""
    return engine_path.parent / f"tensorrt-{tensorrt_version}-sm{capability}.timing-cache"


def attach_timing_cache(
    config: Any, cached: bytes, source: str, log: Callable[[str], None]
) -> tuple[Any, bool]:
    """Give ``config`` the timing cache in ``cached``, or a fresh one when that cache came from
    another GPU or TensorRT version or is damaged (said in one line through ``log``; never
    fatal). Returns ``(cache, loaded)``; the config keeps only a pointer, so hold the cache.

    ``set_timing_cache(cache, ignore_mismatch=False)``: a cache whose device properties differ
    is refused with False ("A failure will be reported if the CUDA device property in the
    provided cache is different from current environment"; ``ignore_mismatch=True`` would
    accept it and "may lead to functional/performance bugs": NvInfer.h, setTimingCache). A
    foreign or damaged blob can also fail in ``create_timing_cache`` (NVIDIA/TensorRT#3566)."""
    if cached:
        try:
            cache = config.create_timing_cache(cached)
        except Exception:  # the bindings raise whatever the C++ side reports
            cache = None
        if cache is not None and config.set_timing_cache(cache, False):
            return cache, True
        log(
            f"{source}: timing cache from another GPU or TensorRT version, or damaged: "
            "starting a fresh one"
        )
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, False):
        raise BuildFailed(f"{source}: TensorRT could not attach an empty timing cache")
    return cache, False


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    profile: Profile,
    workspace_bytes: int,
    timing_cache: str | Path | None,
    tf32: bool = False,
    version_compatible: bool = False,
    log: Callable[[str], None] = print,
) -> EngineSidecar:
    """Build ``engine_path`` and ``<engine_path>.json`` from the ONNX at ``onnx_path``;
    returns the sidecar. Raises ``EnvironmentProblem`` (nothing can be built here),
    ``ValueError`` (the ONNX is not ours) or ``BuildFailed``."""
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    onnx_metadata = tensorrt_graph_metadata(onnx_path)
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
    shapes = input_shapes(profile, onnx_metadata)
    for name in onnx_metadata.inputs:
        optimisation_profile.set_shape(
            name, shapes["min"][name], shapes["opt"][name], shapes["max"][name]
        )
    if config.add_optimization_profile(optimisation_profile) < 0:
        raise BuildFailed(f"{onnx_path}: TensorRT refused the optimisation profile {profile}")
    cache_path = Path(timing_cache) if timing_cache else None
    cached = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    # Held until the function returns, whatever the bindings keep alive on their side.
    _timing_cache, cache_loaded = attach_timing_cache(
        config, cached, str(cache_path or "timing cache"), log
    )

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildFailed(f"{onnx_path}: TensorRT failed to build the engine (see its log above)")
    engine_bytes = bytes(serialized)
    build_seconds = time.perf_counter() - started

    if cache_path is not None:
        atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))
    sidecar = EngineSidecar(
        tensorrt_version=trt.__version__,
        gpu_name=gpu["gpu_name"],
        compute_capability=gpu["compute_capability"],
        profile=profile,
        version_compatible=version_compatible,
        engine_sha256=hashlib.sha256(engine_bytes).hexdigest(),
        onnx_metadata=onnx_metadata,
        precision=onnx_metadata.precision,
        tf32=tf32,
        workspace_bytes=int(workspace_bytes),
        timing_cache_bytes_loaded=len(cached) if cache_loaded else 0,
        onnx_sha256=file_sha256(onnx_path),
        build_seconds=round(build_seconds, 3),
        built_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        toolkit_version=toolkit_version(),
    )
    write_engine(engine_path, engine_bytes, sidecar)
    return sidecar


def write_engine(engine_path: Path, engine_bytes: bytes, sidecar: EngineSidecar) -> None:
    """Write the engine and its sidecar as a pair: both temporary files are complete before
    either is renamed into place, and no signal lands between the two renames, so a failed
    write (a full disk) or a signal leaves the earlier pair, or none, as it was."""
    with hold_signals(), atomic_path(engine_path) as engine_tmp:
        engine_tmp.write_bytes(engine_bytes)
        write_sidecar(engine_path, sidecar)
