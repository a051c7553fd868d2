"""Where a graph's time goes, from the CPU runtimes' own profilers: OpenVINO's per-layer
counters (``PERF_COUNT``) and ONNX Runtime's profiling trace, for one ONNX graph at one picture
size, summed by layer kind.

OpenVINO names the kernel it picked for each layer (``brgconv_avx512_amx_I8``,
``jit_avx512_I8``, ``ref_any_f32``...), which tells int8 layers that run on the CPU's int8
instructions from ones that fell to reference code; ONNX Runtime names the fused op
(``QLinearConv``, ``FusedConv``...), which tells which Q/DQ patterns its optimizer fused.
Each backend is opened the way ``bokeh-run`` opens it (OpenVINO's model compiled for the
shape, f32 precision, latency hint; ONNX Runtime's CPU session), so the profile is of the
render a user gets. The profilers add a little time of their own: the speed figures come from
``bokeh-bench speed``, the shares from here.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dbsi.runtime.contract import GraphMetadata, TemporalFeed, graph_inputs

PROFILERS = ("openvino", "onnxruntime", "openvino-bf16")
# What runs when none is named: bf16 only on request (it stalls on some CPUs: README).
DEFAULT_PROFILERS = PROFILERS[:2]
COLUMNS = [
    ("backend", "backend", ""),
    ("size", "size", ""),
    ("layer kind", "kind", ""),
    ("kernel", "kernel", ""),
    ("layers", "layers", "d"),
    ("ms per call", "ms", ".1f"),
    ("share", "share_pct", ".1f"),
]
# Single layers named in the report, slowest first, per backend and size.
TOP_LAYERS = 8


@dataclasses.dataclass(frozen=True)
class LayerTime:
    """One layer's mean time per call: its node name, kind (op type), the kernel that ran it
    (OpenVINO's exec type, ONNX Runtime's execution provider) and milliseconds."""

    name: str
    kind: str
    kernel: str
    ms: float


def profile_feed(metadata: GraphMetadata, height: int, width: int) -> dict[str, np.ndarray]:
    """One generated picture of ``height`` x ``width`` as the graph's feed (aperture 1, each
    picture its own maps)."""
    from dbsi.benchmarks.images import generated_image

    batch = generated_image(height, width)[None]
    temporal = TemporalFeed.independent(1, metadata.maps) if metadata.takes_temporal else None
    return graph_inputs(metadata.inputs, batch, None, temporal)


def openvino_layers(
    path: Path, feed: dict[str, np.ndarray], warmup: int, repeats: int, hint: str = "f32"
) -> list[LayerTime]:
    """Per-layer times of ``path`` on OpenVINO's CPU plugin, compiled for the feed's shapes
    with ``bokeh-run``'s settings at precision ``hint``, averaged over ``repeats`` calls after
    ``warmup``."""
    import openvino as ov

    from dbsi.runtime.openvino_backend import compile_config, model_for_hint, process_core

    core = process_core()
    model = model_for_hint(ov, core, core.read_model(str(path)), hint)
    model.reshape({name: list(values.shape) for name, values in feed.items()})
    config = compile_config(hint) | {"PERF_COUNT": True}
    request = core.compile_model(model, "CPU", config).create_infer_request()
    for _ in range(warmup):
        request.infer(feed)
    totals: dict[tuple[str, str, str], float] = collections.defaultdict(float)
    for _ in range(repeats):
        request.infer(feed)
        for info in request.profiling_info:
            if info.status == ov.ProfilingInfo.Status.EXECUTED:
                key = (info.node_name, info.node_type, info.exec_type)
                totals[key] += info.real_time.total_seconds() * 1e3
    return [LayerTime(n, k, e, ms / repeats) for (n, k, e), ms in totals.items()]


def onnxruntime_layers(
    path: Path, feed: dict[str, np.ndarray], warmup: int, repeats: int
) -> list[LayerTime]:
    """Per-node times of ``path`` in an ONNX Runtime CPU session (the graph after ONNX
    Runtime's own fusions), averaged over the last ``repeats`` of ``warmup + repeats`` calls.
    """
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="dbsi-profile-") as folder:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "onnxruntime")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for _ in range(warmup + repeats):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    return trace_layers(events, repeats)


def trace_layers(events: Sequence[dict[str, Any]], repeats: int) -> list[LayerTime]:
    """The node times of an ONNX Runtime profiling trace, averaged over its last ``repeats``
    runs (``model_run`` events; a node's events fall inside its run's span)."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[
        -repeats:
    ]
    if len(runs) < repeats:
        raise ValueError(f"the trace holds {len(runs)} runs, fewer than {repeats}")
    start = runs[0][0]
    totals: dict[tuple[str, str, str], float] = collections.defaultdict(float)
    for event in events:
        if event.get("cat") != "Node" or event["ts"] < start:
            continue
        if not event["name"].endswith("_kernel_time"):
            continue
        args = event.get("args", {})
        key = (
            event["name"].removesuffix("_kernel_time"),
            args.get("op_name", "?"),
            args.get("provider", "?").removesuffix("ExecutionProvider"),
        )
        totals[key] += event["dur"] / 1e3
    return [LayerTime(n, k, e, ms / repeats) for (n, k, e), ms in totals.items()]


LAYER_SOURCES: dict[str, Callable[..., list[LayerTime]]] = {
    "openvino": openvino_layers,
    "onnxruntime": onnxruntime_layers,
    "openvino-bf16": functools.partial(openvino_layers, hint="bf16"),
}


def kind_rows(layers: Sequence[LayerTime]) -> list[dict[str, Any]]:
    """Layers summed by (kind, kernel), slowest first: ``kind``, ``kernel``, ``layers``,
    ``ms`` per call and ``share_pct`` of the whole."""
    groups: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for layer in layers:
        groups[(layer.kind, layer.kernel)].append(layer.ms)
    total = sum(layer.ms for layer in layers) or 1.0
    rows = [
        {"kind": kind, "kernel": kernel, "layers": len(times), "ms": sum(times)}
        for (kind, kernel), times in groups.items()
    ]
    rows.sort(key=lambda row: -row["ms"])
    for row in rows:
        row["share_pct"] = 100 * row["ms"] / total
    return rows


def profile_report(
    models: Sequence[Path],
    cache: Path,
    sizes: Sequence[tuple[int, int]],
    backends: Sequence[str],
    warmup: int,
    repeats: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The ``bokeh-bench profile`` report: for every ONNX graph, backend and size, one row per
    layer kind and kernel, the slowest single layers, and the layer total per call."""
    from dbsi.benchmarks.candidates import ModelSet
    from dbsi.benchmarks.machine import machine_info
    from dbsi.benchmarks.models import cached_onnx, random_checkpoint
    from dbsi.benchmarks.report import base_report
    from dbsi.export.metadata import read_metadata

    random_weights = not models
    if random_weights:
        models = [cached_onnx(random_checkpoint(cache), cache, log)]
    for path in models:
        if path.suffix.lower() != ".onnx":
            raise ValueError(f"{path}: profile takes ONNX graphs (.onnx), not {path.suffix}")
    rows, layers_out, skipped = [], [], []
    for path in models:
        metadata = read_metadata(path)
        for backend in backends:
            for height, width in sizes:
                label = f"{height}x{width}"
                log(f"Profiling {path.name} on {backend} at {label} ...")
                feed = profile_feed(metadata, height, width)
                try:
                    layers = LAYER_SOURCES[backend](path, feed, warmup, repeats)
                except ImportError as exc:
                    skipped.append({"name": backend, "reason": f"not installed ({exc.name})"})
                    break
                common = {"model": str(path), "precision": metadata.precision}
                common |= {"backend": backend, "size": label}
                rows.extend(common | row for row in kind_rows(layers))
                slowest = sorted(layers, key=lambda layer: -layer.ms)[:TOP_LAYERS]
                layers_out.append(
                    common
                    | {
                        "total_ms": sum(layer.ms for layer in layers),
                        "slowest": [dataclasses.asdict(layer) for layer in slowest],
                    }
                )
    report = base_report(
        "profile",
        machine_info(),
        ModelSet([], skipped, random_weights, None),
        rows=rows,
        profiles=layers_out,
        warmup=warmup,
        repeats=repeats,
    )
    for profile in layers_out:
        slowest = ", ".join(
            f"{layer['name']} ({layer['kind']}, {layer['kernel']}) {layer['ms']:.1f} ms"
            for layer in profile["slowest"][:3]
        )
        report["notes"].append(
            f"{profile['backend']} {profile['size']} {profile['precision']}: layers sum to "
            f"{profile['total_ms']:.0f} ms per call; slowest {slowest}"
        )
    return report
