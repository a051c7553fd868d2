"""What ``--model`` names, turned into things to benchmark.

A checkpoint gives the PyTorch eager fp32 reference (``dbsi.benchmarks.torch_renders``) and,
when no ONNX is named, an ONNX exported from it into a cache folder. An ONNX runs through
``dbsi.runtime`` on every ONNX Runtime provider this machine has; an engine runs on native
TensorRT. With no model
at all, a randomly initialised full-width model stands in, and every report says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dbsi.benchmarks.candidates import REFERENCE_NAME, Candidate, ModelSet
from dbsi.benchmarks.timing import GpuMemory
from dbsi.benchmarks.torch_renders import TORCH_VARIANTS, torch_reference, torch_variant
from dbsi.runtime.registry import CHECKPOINT_SUFFIXES, openvino_installed

# ONNX Runtime execution providers by the name dbsi.runtime's open_backend takes.
ORT_PROVIDERS = {
    "CPUExecutionProvider": "cpu",
    "CUDAExecutionProvider": "cuda",
    "TensorrtExecutionProvider": "tensorrt",
}
RANDOM_SEED = 0


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def runtime_candidate(path: Path, backend_name: str, **options: Any) -> Candidate:
    """A ``dbsi.runtime`` backend as a candidate (raises BackendError when it cannot open)."""
    from dbsi.runtime.registry import open_backend

    backend = open_backend(path, backend_name, **options)

    def render(batch: np.ndarray) -> np.ndarray:
        return backend.run(batch)["bokeh"]

    def render_at(batch: np.ndarray, apertures: np.ndarray) -> np.ndarray:
        return backend.run(batch, apertures)["bokeh"]

    @contextlib.contextmanager
    def gpu_memory() -> Iterator[GpuMemory]:
        figure = GpuMemory(None, backend.device_memory_measure)
        yield figure
        figure.peak_bytes = backend.device_memory_bytes()

    return Candidate(
        name=f"{backend.name}-{backend.precision}",
        precision=backend.precision,
        config=backend.config,
        source=str(path),
        device=backend.device,
        render=render,
        close=backend.close,
        accepts=backend.accepts,
        warmup_calls=backend.warmup_calls,
        render_at=render_at if backend.metadata.takes_aperture else None,
        gpu_memory=gpu_memory,
    )


def ort_providers(gpu_present: bool) -> list[str]:
    """ONNX Runtime providers to try: CPU always, CUDA and TensorRT only with a GPU (without
    one they fall back to CPU and would be measured twice)."""
    try:
        import onnxruntime
    except ImportError:
        return []
    available = onnxruntime.get_available_providers()
    names = [ORT_PROVIDERS[p] for p in ORT_PROVIDERS if p in available]
    return [n for n in names if n == "cpu" or gpu_present]


def runtimes_for(
    kind: str, gpu_present: bool, openvino_bf16: bool = False
) -> list[tuple[str, dict[str, Any]]]:
    """Every (backend, options) that measures a model file of ``kind`` (the registry backend
    that opens it): an ONNX on each ONNX Runtime provider here (``ort_providers``) and on
    OpenVINO when it is installed (f32; bf16 too when asked), an engine on TensorRT."""
    if kind != "onnxruntime":
        return [(kind, {})]
    runs: list[tuple[str, dict[str, Any]]] = [
        ("onnxruntime", {"provider": provider}) for provider in ort_providers(gpu_present)
    ]
    if openvino_installed():
        runs.append(("openvino", {}))
        if openvino_bf16:
            runs.append(("openvino", {"openvino_precision": "bf16"}))
    return runs


def cache_key(**inputs: Any) -> str:
    """A short hex key over everything that decides a cached file's content."""
    text = json.dumps(inputs, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def random_checkpoint(cache: Path, width: float = 1.0, **config_fields: Any) -> Path:
    """A randomly initialised (seed 0) model of ``width`` (and any other ``BokehConfig``
    fields) saved as a checkpoint in ``cache``, keyed on the whole render config, the toolkit
    and torch versions (a changed default or initialiser gives a new file)."""
    import torch

    from dbsi.runtime.provenance import toolkit_version
    from dbsi.train.checkpoint import save_checkpoint
    from dbsi.train.config import BokehConfig
    from dbsi.train.render import BokehRenderer

    config = BokehConfig(width=width, **config_fields)
    key = cache_key(
        config=config.to_dict(),
        seed=RANDOM_SEED,
        toolkit=toolkit_version(),
        torch=torch.__version__,
    )
    path = cache / f"random-width{width:g}-seed{RANDOM_SEED}-{key}.pt"
    if not path.is_file():
        torch.manual_seed(RANDOM_SEED)
        save_checkpoint(path, BokehRenderer(config).eval())
    return path


def onnx_cache_key(checkpoint_sha256: str) -> str:
    """What decides the exported graph: the checkpoint, the toolkit (the graph code), the ONNX
    contract and opset, and the exporter (torch) and onnx versions."""
    import onnx
    import torch

    from dbsi.export.onnx_graph import OPSET
    from dbsi.runtime.contract import ONNX_FORMAT_VERSION
    from dbsi.runtime.provenance import toolkit_version

    return cache_key(
        checkpoint=checkpoint_sha256,
        toolkit=toolkit_version(),
        format_version=ONNX_FORMAT_VERSION,
        opset=OPSET,
        torch=torch.__version__,
        onnx=onnx.__version__,
    )


def cached_onnx(checkpoint: Path, cache: Path, log: Callable[[str], None] = print) -> Path:
    """The fp32 ONNX export of ``checkpoint`` (``bokeh-export onnx``'s graph and metadata), made
    once per ``onnx_cache_key``."""
    from dbsi.export.onnx_graph import checkpoint_onnx, write_onnx
    from dbsi.runtime.provenance import file_sha256
    from dbsi.train.checkpoint import load_renderer

    digest = file_sha256(checkpoint)
    path = cache / onnx_cache_key(digest) / "model.onnx"
    if path.is_file():
        return path
    log(f"Exporting {checkpoint} to ONNX (cached as {path}) ...")
    write_onnx(checkpoint_onnx(load_renderer(checkpoint), digest), path)
    return path


def classify(path: Path) -> str:
    """ "checkpoint", or the name of the runtime backend that opens ``path``."""
    from dbsi.runtime.registry import MODEL_SUFFIXES, backend_for

    suffix = path.suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    if suffix in MODEL_SUFFIXES:
        return backend_for(path)
    raise ValueError(
        f"{path}: unknown model type {suffix!r} (a checkpoint {'/'.join(CHECKPOINT_SUFFIXES)} "
        f"or a model {'/'.join(MODEL_SUFFIXES)})"
    )


def resolve_models(
    paths: Iterable[str | Path],
    cache: Path,
    *,
    gpu_present: bool,
    with_reference: bool = True,
    with_backends: bool = True,
    mode: str | None = None,
    torch_variants: bool = False,
    openvino_bf16: bool = False,
    log: Callable[[str], None] = print,
) -> ModelSet:
    """Open everything ``paths`` names (see the module docstring). ValueError on a path that
    is missing or of an unknown type; a backend that cannot open here is listed in
    ``skipped`` with its reason. ``mode`` overrides the checkpoint's render mode;
    ``torch_variants`` adds the ``TORCH_VARIANTS`` renders when the reference runs on CUDA;
    ``openvino_bf16`` adds OpenVINO computing in bf16 beside its f32 run."""
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.is_file():
            raise ValueError(f"{path}: no such model file")
    kinds = {path: classify(path) for path in paths}
    checkpoints = [p for p in paths if kinds[p] == "checkpoint"]
    if len(checkpoints) > 1:
        raise ValueError(
            f"{checkpoints[1]}: give at most one checkpoint (it is the reference the others are "
            "measured against)"
        )
    random_weights = not paths
    if random_weights:
        if not torch_available():
            raise ValueError("no --model given and torch is not installed to make a random one")
        log("No --model given: benchmarking a RANDOMLY INITIALISED full-width model (seed 0).")
        checkpoints = [random_checkpoint(cache)]
    checkpoint = checkpoints[0] if checkpoints else None
    artefacts = [p for p in paths if kinds[p] != "checkpoint"]
    candidates: list[Candidate] = []
    skipped: list[dict[str, str]] = []
    if checkpoint is not None and with_reference:
        if torch_available():
            from dbsi.train.checkpoint import load_renderer

            reference = torch_reference(load_renderer(checkpoint, mode), str(checkpoint))
            candidates.append(reference)
            if torch_variants and reference.device != "CPU":
                candidates.extend(
                    torch_variant(load_renderer(checkpoint, mode), str(checkpoint), name, "cuda")
                    for name in TORCH_VARIANTS
                )
        else:
            skipped.append({"name": REFERENCE_NAME, "reason": "torch is not installed"})
    # A checkpoint alone is exported for ONNX Runtime; named ONNX or engine files replace that.
    if checkpoint is not None and not artefacts and with_backends and mode is None:
        artefacts = [cached_onnx(checkpoint, cache, log)]
        kinds[artefacts[0]] = "onnxruntime"
    if with_backends:
        for path in artefacts:
            for backend_name, options in runtimes_for(kinds[path], gpu_present, openvino_bf16):
                candidates.extend(open_or_skip(path, backend_name, options, skipped))
    return ModelSet(candidates, skipped, random_weights, checkpoint)


def open_or_skip(
    path: Path, backend_name: str, options: dict[str, Any], skipped: list[dict[str, str]]
) -> list[Candidate]:
    from dbsi.runtime.errors import BackendError

    label = f"{path.name} ({' '.join([backend_name, *map(str, options.values())])})"
    try:
        return [runtime_candidate(path, backend_name, **options)]
    except (BackendError, ValueError, ImportError, OSError) as exc:
        skipped.append(
            {"name": label, "reason": str(exc).splitlines()[0] if str(exc) else repr(exc)}
        )
        return []
