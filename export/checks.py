"""The checks every export passes before it is written: onnx.checker (full check), strict shape
inference, the rules TensorRT's ONNX parser documents (``dbsi.export.tensorrt_rules``), and
ONNX Runtime against the PyTorch render on real photos (scikit-image's) at several sizes, a
portrait and odd ones included.

``compare_with_reference`` is the reusable piece: render photos with the PyTorch reference and
with an ONNX Runtime session, and judge them with ``dbsi.export.parity``.
"""

from __future__ import annotations

import ctypes
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto

from dbsi.export.metadata import model_metadata
from dbsi.export.onnx_graph import PixelsToBokeh
from dbsi.export.parity import PARITY_THRESHOLDS, parity_failures, parity_stats
from dbsi.export.photos import sample_photos
from dbsi.export.tensorrt_rules import tensorrt_problems
from dbsi.runtime.contract import (
    APERTURE_NAME,
    INPUT_DTYPES,
    INPUT_NAME,
    OUTPUT_NAME,
    TEMPORAL_MAPS_NAME,
    TEMPORAL_MIX_NAME,
    TEMPORAL_STATE_NAME,
    WEIGHTS_NAME,
    GraphMetadata,
    TemporalFeed,
    graph_inputs,
)
from dbsi.train.render import BokehRenderer


class CheckFailed(Exception):
    """An export failed its checks; ``report`` says which and by how much."""

    def __init__(self, report: CheckReport) -> None:
        super().__init__(report.summary())
        self.report = report


@dataclasses.dataclass
class CheckReport:
    """Named check results, in the order they ran."""

    source: str
    results: list[tuple[str, bool, str]] = dataclasses.field(default_factory=list)
    parity: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def add(self, name: str, problems: list[str], detail: str = "") -> None:
        self.results.append((name, not problems, "; ".join(problems) or detail))

    @property
    def passed(self) -> bool:
        return all(ok for _, ok, _ in self.results)

    def failed_names(self) -> list[str]:
        return [name for name, ok, _ in self.results if not ok]

    def lines(self) -> list[str]:
        return [
            f"  {'ok  ' if ok else 'FAIL'} {name}: {detail}" for name, ok, detail in self.results
        ]

    def summary(self) -> str:
        if self.passed:
            return f"{self.source}: all {len(self.results)} checks passed"
        return f"{self.source}: checks failed: {', '.join(self.failed_names())}"


def check_photos() -> dict[str, np.ndarray]:
    """Real photos as uint8 BGR batches (N x H x W x 3): square, landscape, portrait, odd sizes,
    and a batch of two."""
    try:
        photos = sample_photos()
    except ImportError as exc:
        raise RuntimeError(
            "the parity checks need scikit-image's sample photos: pip install scikit-image"
        ) from exc
    coffee, motorcycle = photos["coffee"], photos["motorcycle"]
    batches = {
        "astronaut 512x512": photos["astronaut"][None],
        "coffee portrait 600x400": coffee.transpose(1, 0, 2)[None],
        "motorcycle crop 333x517": motorcycle[100:433, 150:667][None],
        "chelsea 300x451": photos["chelsea"][None],
        "batch of 2 400x600": np.stack([coffee, motorcycle[50:450, 70:670]]),
    }
    return {name: np.ascontiguousarray(batch) for name, batch in batches.items()}


# A batch of two rendered at two apertures at once: each picture takes its own.
CHECK_APERTURES = (0.5, 2.0)
# A batch of two smoothed over time: the first picture half its own maps and half a carried
# state, the second a quarter of each picture's maps and half the state.
CHECK_TEMPORAL_MIX = ((0.5, 0.5, 0.0), (0.5, 0.25, 0.25))


def check_temporal_feed(maps: int) -> TemporalFeed:
    """The smoothing ``CHECK_TEMPORAL_MIX`` with a state of weight maps (positive, summing to
    one at every pixel) at a size no network has, so the graph's resize of it runs too."""
    state = np.random.default_rng(0).random((1, maps, 7, 9)).astype(np.float32) + 0.1
    state /= state.sum(axis=1, keepdims=True)
    return TemporalFeed(state, np.array(CHECK_TEMPORAL_MIX, np.float32))


@dataclasses.dataclass(frozen=True)
class PhotoCase:
    """One batch to render: its name, pixels, apertures (None: the graph has no aperture
    input) and temporal feed (None: the graph has no temporal inputs)."""

    name: str
    batch: np.ndarray
    apertures: np.ndarray | None
    temporal: TemporalFeed | None


def photo_cases(photos: dict[str, np.ndarray], metadata: GraphMetadata) -> list[PhotoCase]:
    """The batches to run: every photo batch as trained, each picture its own maps; for a
    graph that takes an aperture the last batch of two again at ``CHECK_APERTURES``, and for
    one that takes the temporal inputs again smoothed with ``check_temporal_feed``."""

    def temporal(pictures: int) -> TemporalFeed | None:
        if not metadata.takes_temporal:
            return None
        return TemporalFeed.independent(pictures, metadata.maps)

    def apertures(values: tuple[float, ...]) -> np.ndarray | None:
        return np.array(values, np.float32) if metadata.takes_aperture else None

    cases = [
        PhotoCase(name, batch, apertures((1.0,) * len(batch)), temporal(len(batch)))
        for name, batch in photos.items()
    ]
    two = [(name, batch) for name, batch in photos.items() if len(batch) == 2]
    if two and metadata.takes_aperture:
        name, batch = two[-1]
        label = " and ".join(f"{a:g}" for a in CHECK_APERTURES)
        cases.append(
            PhotoCase(
                f"{name} at apertures {label}", batch, apertures(CHECK_APERTURES), temporal(2)
            )
        )
    if two and metadata.takes_temporal:
        name, batch = two[-1]
        feed = check_temporal_feed(metadata.maps)
        cases.append(PhotoCase(f"{name} smoothed over time", batch, apertures((1.0, 1.0)), feed))
    return cases


def reference_render(
    renderer: BokehRenderer,
    batch_bgr: np.ndarray,
    with_weights: bool = False,
    apertures: np.ndarray | None = None,
    temporal: TemporalFeed | None = None,
) -> dict[str, np.ndarray]:
    """The PyTorch render of a uint8 BGR batch (at ``apertures``, or as trained; smoothed by
    ``temporal``, or each picture its own maps) through the same pixel wrapper the graph
    holds: ``{"bokeh": uint8 NHWC BGR}`` plus ``"weights"`` when asked for."""
    module = PixelsToBokeh(renderer.eval(), with_weights=True)
    aperture = None if apertures is None else torch.from_numpy(apertures)
    state = mix = None
    if temporal is not None:
        state, mix = torch.from_numpy(temporal.state), torch.from_numpy(temporal.mix)
    with torch.no_grad():
        pixels, weights, *_ = module(torch.from_numpy(batch_bgr), aperture, state, mix)
    out = {OUTPUT_NAME: pixels.numpy()}
    if with_weights:
        out[WEIGHTS_NAME] = weights.numpy()
    return out


def onnx_session(path: str | Path) -> ort.InferenceSession:
    """An ONNX Runtime CPU session for ``path``, without ONNX Runtime's memory arena.

    The checks run each photo batch once, at several sizes: an arena would keep what the largest
    one needed (4.4 GiB for the batch of two on the full-width int8 graph, measured) for the rest
    of the export, under the PyTorch reference's own peak. Without it each run frees its
    buffers, which keeps an int8 export of the full-width model under 4 GB."""
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = False
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def return_freed_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim``; a no-op on a
    C library without it). A full-size render frees gigabytes into glibc's heap, which keeps
    most of them: without a trim after each photo batch, the checks' resident size crept from
    0.6 to 1.3 GiB between renders and peaked 0.3 GiB higher (full-width int8 graph, measured).
    """
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


def compare_with_reference(
    session: ort.InferenceSession,
    metadata: GraphMetadata,
    renderer: BokehRenderer,
    photos: dict[str, np.ndarray],
) -> list[dict[str, Any]]:
    """Run every photo batch (``photo_cases``) through ``session``, the graph ``metadata``
    describes, and the PyTorch ``renderer``; one row per
    batch: ``name``, ``shape``, the ``parity_stats`` of the bokeh image, ``weights_max_abs_error``
    (None when the graph has no weights output), ``failures`` and ``passed`` under
    ``PARITY_THRESHOLDS`` of the graph's precision."""
    precision = metadata.precision
    outputs = [o.name for o in session.get_outputs()]
    with_weights = WEIGHTS_NAME in outputs
    rows = []
    for case in photo_cases(photos, metadata):
        name, batch = case.name, case.batch
        feed = graph_inputs(metadata.inputs, batch, case.apertures, case.temporal)
        got = dict(zip(outputs, session.run(None, feed)))
        want = reference_render(renderer, batch, with_weights, case.apertures, case.temporal)
        stats = parity_stats(want[OUTPUT_NAME], got[OUTPUT_NAME])
        failures = parity_failures(stats, precision)
        weights_error = None
        if with_weights:
            weights_error = float(np.abs(want[WEIGHTS_NAME] - got[WEIGHTS_NAME]).max())
            limit = PARITY_THRESHOLDS[precision].get("weights_max_abs_error", np.inf)
            if weights_error > limit:
                failures.append(f"weight maps off by {weights_error:.2e} > {limit:.0e}")
        rows.append(
            {
                "name": name,
                "shape": list(batch.shape),
                **stats,
                "weights_max_abs_error": weights_error,
                "failures": failures,
                "passed": not failures,
            }
        )
        del got, want
        return_freed_memory()
    return rows


def io_problems(model: onnx.ModelProto, metadata: GraphMetadata) -> list[str]:
    """The graph's I/O against the contract: the metadata's inputs in order (``image`` uint8
    N x H x W x 3, ``aperture`` float32 [N], ``temporal_state`` float32 1 x K x h x w,
    ``temporal_mix`` float32 N x (N + 1), every other dimension dynamic), the metadata's
    outputs out, ``bokeh`` uint8 and the maps float32."""
    problems = []
    outputs = list(metadata.outputs)
    inputs = [(i.name, i.type.tensor_type) for i in model.graph.input]
    if [name for name, _ in inputs] != list(metadata.inputs):
        problems.append(
            f"inputs are {[name for name, _ in inputs]}, metadata says {list(metadata.inputs)}"
        )
    else:
        # None: a dynamic dimension.
        fixed = {
            INPUT_NAME: [None, None, None, 3],
            APERTURE_NAME: [None],
            TEMPORAL_STATE_NAME: [1, metadata.maps, None, None],
            TEMPORAL_MIX_NAME: [None, None],
        }
        types = {"uint8": TensorProto.UINT8, "float32": TensorProto.FLOAT}
        for name, tensor in inputs:
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
            want = types[INPUT_DTYPES[name]]
            if tensor.elem_type != want or dims != fixed[name]:
                problems.append(
                    f"input {name} is not {INPUT_DTYPES[name]} {fixed[name]} (None: dynamic), "
                    f"found type {tensor.elem_type} {dims}"
                )
    names = [o.name for o in model.graph.output]
    if names != outputs:
        problems.append(f"outputs are {names}, metadata says {outputs}")
    expected = {
        OUTPUT_NAME: TensorProto.UINT8,
        WEIGHTS_NAME: TensorProto.FLOAT,
        TEMPORAL_MAPS_NAME: TensorProto.FLOAT,
    }
    for output in model.graph.output:
        want = expected.get(output.name)
        if want is not None and output.type.tensor_type.elem_type != want:
            problems.append(f"output {output.name} has element type {output.type.tensor_type}")
    return problems


def _problems_of(call) -> list[str]:
    try:
        call()
    except Exception as exc:  # the checker and shape inference raise several error types
        return [f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"]
    return []


def run_checks(
    path: str | Path,
    renderer: BokehRenderer | None,
    photos: dict[str, np.ndarray] | None = None,
    name: str | None = None,
    run_graph: bool = True,
) -> CheckReport:
    """Every check on the ONNX at ``path``; parity needs the ``renderer`` it was exported from
    (None runs the graph on the photos without judging the pixels). ``name`` is what the report
    calls the file (default ``path``; the exporter checks a temporary file before renaming it).
    ``run_graph=False`` keeps to the static checks (checker, shape inference, I/O, TensorRT
    parser rules). Returns the report; raises ``CheckFailed`` carrying it when a check fails."""
    path = Path(path)
    model = onnx.load(str(path))
    metadata = model_metadata(model, name or str(path))
    precision = metadata.precision
    report = CheckReport(name or str(path))
    report.add(
        "onnx.checker (full)", _problems_of(lambda: onnx.checker.check_model(str(path), True))
    )
    report.add(
        "shape inference (strict)",
        _problems_of(lambda: onnx.shape_inference.infer_shapes(model, True, True)),
    )
    report.add("graph I/O", io_problems(model, metadata))
    if metadata.for_tensorrt:
        report.add(
            "TensorRT parser rules",
            tensorrt_problems(model, metadata.min_input_side),
            "UINT8 only at the I/O through Casts, supported ops and types, Resize by sizes, "
            "constant pads and axes, zero points 0",
        )
    else:
        report.add(
            "TensorRT parser rules",
            [],
            f"not applied: {metadata.precision} graphs are for ONNX Runtime's CPU kernels",
        )
    if not run_graph:
        return _finish(report)
    photos = check_photos() if photos is None else photos
    try:
        session = onnx_session(path)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        report.add("ONNX Runtime session", [str(exc).splitlines()[0]])
        return _finish(report)
    if renderer is None:

        def independent(batch: np.ndarray) -> TemporalFeed | None:
            if not metadata.takes_temporal:
                return None
            return TemporalFeed.independent(len(batch), metadata.maps)

        problems = []
        for name, batch in photos.items():
            feed = graph_inputs(metadata.inputs, batch, None, independent(batch))
            out = session.run([OUTPUT_NAME], feed)[0]
            if out.shape != batch.shape or out.dtype != np.uint8:
                problems.append(f"{name}: output {out.dtype} {out.shape}")
        report.add("ONNX Runtime runs", problems, f"{len(photos)} photo batches, parity not judged")
        return _finish(report)
    rows = compare_with_reference(session, metadata, renderer, photos)
    report.parity = rows
    for row in rows:
        report.add(f"{precision} parity, {row['name']}", row["failures"], format_parity(row))
    return _finish(report)


def _finish(report: CheckReport) -> CheckReport:
    if not report.passed:
        raise CheckFailed(report)
    return report


def format_parity(row: dict[str, Any]) -> str:
    """One line of parity numbers."""
    text = (
        f"max {row['max_abs_error']} levels, {row['share_over_1_level']:.4%} > 1 level, "
        f"PSNR {row['psnr_db']:.1f} dB"
    )
    if row.get("weights_max_abs_error") is not None:
        text += f", weights max {row['weights_max_abs_error']:.1e}"
    return text
