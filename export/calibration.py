"""Activation ranges for int8 quantization, measured on the user's photos.

The fp32 graph runs on each calibration photo (resized to the network size the graph computes,
since the graph resizes to it anyway), one photo at a time, with each tensor to calibrate
reduced inside the graph as soon as it is computed (``dbsi.export.calibration_graph``): its
minimum and maximum and, for ``percentile``, an evenly strided sample of at most about
``2 * SAMPLE`` values. A full-width model's activations take about 7.6 GB per photo; holding
them as graph outputs, as this module did before, peaked at 18 GiB (README, INT8). Min and max
are exact in any order, so the ranges are those of the whole tensors bit for bit. Each photo
leaves each tensor's extremes and, for ``percentile``, a 2048-bin histogram of its sample over
the tensor's range; at the end the histograms are merged onto one grid over the whole range:

- ``minmax`` (the default, ``dbsi.export.int8``): the extremes over all photos;
- ``percentile``: the 0.001% and 99.999% quantiles (symmetric: the 99.999% quantile of |x|),
  so a few outlying activations do not stretch the scale.

ONNX Runtime's own histogram calibrators either keep every photo's activations in memory or,
collecting photo by photo, re-bin their histograms at every wider range; on the demo model the
latter cost 6.5 dB on the worst check photo (33.7 against 40.2 dB), hence this module.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx

from dbsi.export.calibration_graph import calibration_session
from dbsi.runtime.contract import TemporalFeed, graph_inputs
from dbsi.runtime.images import IMAGE_EXTENSIONS, ImageError, read_image
from dbsi.runtime.provenance import file_sha256
from dbsi.train.config import BokehConfig

METHODS = ("percentile", "minmax")
PERCENTILE = 99.999
BINS = 2048
SAMPLE = 1 << 20


class CalibrationError(ValueError):
    """The calibration folder cannot calibrate anything (missing, empty, nothing readable)."""


@dataclasses.dataclass(frozen=True)
class CalibrationSet:
    """The photos that calibrate a quantization (each checked to decode) and what was skipped.
    They are decoded again one at a time when used, so a set of large photos is never held in
    memory at once."""

    folder: Path
    files: list[Path]
    skipped: list[str]

    def network_inputs(self, config: BokehConfig) -> Iterator[np.ndarray]:
        """Each photo as the predictor sees it in the graph: a batch of one at its network
        size."""
        for path in self.files:
            yield network_input(read_image(path).bgr, config)

    def summary(self, method: str) -> dict[str, Any]:
        """What the graph's metadata records: how many photos, how many were skipped, the
        method, and a sha256 over the relative paths and contents of the photos used."""
        digest = hashlib.sha256()
        for path in self.files:
            digest.update(f"{path.relative_to(self.folder).as_posix()}\t".encode())
            digest.update(f"{file_sha256(path)}\n".encode())
        return {
            "images": len(self.files),
            "skipped": len(self.skipped),
            "method": method,
            "files_sha256": digest.hexdigest(),
        }


def read_calibration_set(folder: str | Path, limit: int) -> CalibrationSet:
    """Up to ``limit`` photos from ``folder`` (recursive, sorted by path, every format the
    toolkit reads), decoded as bokeh-run decodes them; an unreadable one is skipped with its
    reason. CalibrationError when the folder is missing or yields no photo."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"{folder}: no such calibration folder")
    candidates = sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )
    files, skipped = [], []
    for path in candidates:
        if len(files) == limit:
            break
        try:
            read_image(path)
        except ImageError as exc:
            skipped.append(f"{path}: {exc}")
            continue
        files.append(path)
    if not files:
        found = f"{len(candidates)} pictures, none readable" if candidates else "no pictures"
        raise CalibrationError(
            f"{folder}: {found} ({', '.join(IMAGE_EXTENSIONS)}); calibration needs photos like "
            "the ones the model will render"
        )
    return CalibrationSet(folder, files, skipped)


def network_input(image: np.ndarray, config: BokehConfig) -> np.ndarray:
    """``image`` resized to its network size as the graph resizes it (bilinear, half-pixel
    centres, no antialiasing: OpenCV's INTER_LINEAR samples as ``F.interpolate`` does), as a
    batch of one."""
    height, width = config.network_size(*image.shape[:2])
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(resized[None])


class TensorStatistics:
    """One tensor's extremes over every photo, and for ``percentile`` its per-photo
    histograms (of an evenly strided sample of at most about ``2 * SAMPLE`` values: the full
    tensors of a full-width model hold about 2e9 values per photo), merged on demand onto one
    grid."""

    def __init__(self, symmetric: bool, histograms: bool) -> None:
        self.symmetric, self.histograms = symmetric, histograms
        self.low, self.high = np.inf, -np.inf
        self.parts: list[tuple[np.ndarray, float, float]] = []

    def add(self, low: float, high: float, sample: np.ndarray | None) -> None:
        """One photo's extremes of the tensor and, for histograms, its strided sample
        (``strided_sample``)."""
        self.low, self.high = min(self.low, low), max(self.high, high)
        if not self.histograms:
            return
        if self.symmetric:
            sample, low, high = np.abs(sample), 0.0, max(abs(low), abs(high))
        high = max(high, low + 1e-12)
        counts, _ = np.histogram(sample, bins=BINS, range=(low, high))
        self.parts.append((counts, low, high))

    def quantile(self, q: float) -> float:
        """The value below which a share ``q`` of the sampled values lies, to within one bin
        of the merged grid (each part's bins land where their centres fall)."""
        low = min(part[1] for part in self.parts)
        high = max(part[2] for part in self.parts)
        width = (high - low) / BINS or 1e-12
        merged = np.zeros(BINS, np.float64)
        for counts, part_low, part_high in self.parts:
            step = (part_high - part_low) / BINS
            centres = part_low + (np.arange(BINS) + 0.5) * step
            index = np.clip(((centres - low) / width).astype(np.int64), 0, BINS - 1)
            np.add.at(merged, index, counts)
        cumulative = np.cumsum(merged) / merged.sum()
        return low + (int(np.searchsorted(cumulative, q)) + 1) * width

    def range(self, method: str) -> tuple[float, float]:
        low, high = self.low, self.high
        if self.symmetric:
            high = max(abs(low), abs(high))
            if method == "percentile":
                high = self.quantile(PERCENTILE / 100)
            return -high, high
        if method == "percentile":
            low, high = self.quantile(1 - PERCENTILE / 100), self.quantile(PERCENTILE / 100)
        return min(low, 0.0), max(high, 0.0)


def tensors_to_calibrate(model: onnx.ModelProto, nodes: Sequence[str]) -> list[str]:
    """The activations around the named nodes (every input that is not a weight, and their
    output), which the quantizer gives Q/DQ pairs and so needs ranges for."""
    wanted = set(nodes)
    weights = {tensor.name for tensor in model.graph.initializer}
    names: list[str] = []
    for node in model.graph.node:
        if node.name in wanted:
            for name in (*node.input, node.output[0]):
                if name and name not in weights and name not in names:
                    names.append(name)
    return names


def strided_sample(values: np.ndarray) -> np.ndarray:
    """Every ``max(1, size // SAMPLE)``-th value of ``values`` flattened, from the first: what
    the calibration graph's sample output holds (``dbsi.export.calibration_graph``)."""
    flat = values.reshape(-1)
    return flat[:: max(1, flat.size // SAMPLE)]


def activation_ranges(
    model: onnx.ModelProto,
    tensors: Sequence[str],
    photos: CalibrationSet,
    *,
    method: str,
    symmetric: bool,
    progress: Callable[[], None] = lambda: None,
) -> dict[str, tuple[float, float]]:
    """(low, high) for each of ``tensors`` over the calibration photos (see the module
    docstring); ``symmetric`` ranges are (-t, t), others always include 0."""
    if method not in METHODS:
        raise ValueError(f"calibration method {method!r} is not one of {', '.join(METHODS)}")
    histograms = method == "percentile"
    session, outputs = calibration_session(model, tensors, SAMPLE if histograms else None)
    config = BokehConfig.from_dict(_config_of(model))
    names = [i.name for i in session.get_inputs()]
    fetches = [name for per_tensor in outputs for name in per_tensor]
    statistics = {name: TensorStatistics(symmetric, histograms) for name in tensors}
    for batch in photos.network_inputs(config):
        # Each picture its own maps, as photos are rendered.
        temporal = TemporalFeed.independent(len(batch), config.num_maps)
        values = iter(session.run(fetches, graph_inputs(names, batch, None, temporal)))
        for name in tensors:
            low, high = float(next(values)), float(next(values))
            statistics[name].add(low, high, next(values) if histograms else None)
        progress()
    return {name: statistics[name].range(method) for name in tensors}


def _config_of(model: onnx.ModelProto) -> dict[str, Any]:
    from dbsi.export.metadata import model_metadata

    return model_metadata(model, "the fp32 export").config
