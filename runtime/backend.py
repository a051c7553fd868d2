"""The one small interface every inference backend implements (``dbsi.runtime.registry``
opens them).

A backend takes a batch of decoded pixels exactly as OpenCV gives them (uint8, N x H x W x 3,
BGR) and returns the graph's outputs by name (``bokeh``: uint8 N x H x W x 3 BGR; optionally
``weights``: float32 N x (n+1) x H x W). Model facts (config, accepted sizes, precision) come
from the artefact's ``dbsi.*`` metadata, never from this code.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import numpy as np

from dbsi.runtime.contract import MAX_BATCH, GraphMetadata, TemporalFeed


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
    #: the artefact's metadata (docs/ARTEFACTS.md)
    metadata: GraphMetadata
    #: output names, in the graph's order
    outputs: list[str]
    #: calls on one input shape before the backend runs it at its steady speed (what a
    #: benchmark must warm up with)
    warmup_calls: int = 1

    @property
    def config(self) -> dict[str, Any]:
        """The render config the artefact carries."""
        return self.metadata.config

    @property
    def precision(self) -> str:
        return self.metadata.precision

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

    def run(
        self,
        batch: np.ndarray,
        aperture: float | np.ndarray | None = None,
        temporal: TemporalFeed | None = None,
    ) -> dict[str, np.ndarray]:
        """Run one uint8 N x H x W x 3 BGR batch at ``aperture`` (one value for every picture
        or one per picture; None: 1, the model as trained) with ``temporal`` smoothing of the
        weight maps (None: every picture its own); returns every output by name. ValueError
        when the batch, the aperture or the temporal feed is not one this model takes."""
        self.check_batch(batch)
        return self._run(
            batch, self.apertures_for(batch, aperture), self.temporal_for(batch, temporal)
        )

    @abc.abstractmethod
    def _run(
        self, batch: np.ndarray, apertures: np.ndarray | None, temporal: TemporalFeed | None
    ) -> dict[str, np.ndarray]:
        """Run a batch that ``check_batch`` accepted, with its apertures (float32 [N]; None
        for a graph exported without the aperture input) and its temporal feed (None for a
        graph exported without the temporal inputs)."""

    def temporal_for(self, batch: np.ndarray, temporal: TemporalFeed | None) -> TemporalFeed | None:
        """The temporal feed to give the graph: ``temporal``, or every picture its own maps
        when None; None for a graph without the inputs (ValueError if one was given)."""
        if not self.metadata.takes_temporal:
            if temporal is not None:
                raise ValueError(
                    f"{self.name}: this graph was exported without the temporal inputs; "
                    "re-export it with bokeh-export to smooth video over time"
                )
            return None
        if temporal is None:
            return TemporalFeed.independent(len(batch), self.metadata.maps)
        try:
            temporal.check(len(batch), self.metadata.maps)
        except ValueError as exc:
            raise ValueError(f"{self.name}: {exc}") from exc
        return temporal

    def apertures_for(
        self, batch: np.ndarray, aperture: float | np.ndarray | None
    ) -> np.ndarray | None:
        """The float32 [N] apertures to feed, None for a graph without the input (which takes
        only 1); ValueError for anything else."""
        if not self.metadata.takes_aperture:
            if aperture is not None and np.any(np.asarray(aperture) != 1):
                raise ValueError(
                    f"{self.name}: this graph was exported without the aperture input; "
                    "re-export it with bokeh-export to render at an aperture other than 1"
                )
            return None
        given = np.asarray(1.0 if aperture is None else aperture, np.float32)
        if given.ndim > 1 or given.size not in (1, len(batch)):
            raise ValueError(
                f"{self.name}: one aperture for the batch or one per picture ({len(batch)}), "
                f"got {given.size}"
            )
        values = np.broadcast_to(given.reshape(-1), (len(batch),))
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{self.name}: apertures must be finite, got {values}")
        return np.ascontiguousarray(values)

    #: how ``device_memory_bytes`` is measured, in words, for reports
    device_memory_measure: str = "none (runs on the CPU)"

    def device_memory_bytes(self) -> int | None:
        """GPU memory this backend holds for its model, as its runtime reports it; None where
        the runtime reports none (or the model runs on the CPU)."""
        return None

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
