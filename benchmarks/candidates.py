"""What a benchmark measures: a ``Candidate`` (one backend running one model, with how to
time it and how to read its memory) and a ``ModelSet`` (every candidate ``--model`` resolved
to, and what could not be opened). ``dbsi.benchmarks.models`` and
``dbsi.benchmarks.torch_renders`` make them; the commands measure them."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dbsi.benchmarks.timing import GpuMemory, no_gpu_memory, wall_clock

REFERENCE_NAME = "pytorch-eager-fp32"


@dataclasses.dataclass
class Candidate:
    """One backend running one model: uint8 N x H x W x 3 BGR in, the same out."""

    name: str
    precision: str
    config: dict[str, Any]
    source: str
    device: str
    render: Callable[[np.ndarray], np.ndarray]
    clock: Callable[[Callable[[], Any]], float] = wall_clock
    is_reference: bool = False
    close: Callable[[], None] = lambda: None
    accepts: Callable[[tuple[int, ...]], str | None] = lambda shape: None
    #: the least warm-up calls that bring it to its steady speed (``Backend.warmup_calls``)
    warmup_calls: int = 1
    #: (batch, float32 [N] apertures) -> bokeh; None for a graph without the aperture input
    render_at: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    #: a context manager around a measurement that yields the device memory this candidate
    #: holds for itself (``GpuMemory``), filled in when the block ends
    gpu_memory: Callable[[], contextlib.AbstractContextManager[GpuMemory]] = no_gpu_memory


@dataclasses.dataclass
class ModelSet:
    """Everything ``--model`` resolved to, plus what could not be opened and why."""

    candidates: list[Candidate]
    skipped: list[dict[str, str]]
    random_weights: bool
    checkpoint: Path | None

    @property
    def reference(self) -> Candidate | None:
        return next((c for c in self.candidates if c.is_reference), None)

    def close(self) -> None:
        for candidate in self.candidates:
            candidate.close()
