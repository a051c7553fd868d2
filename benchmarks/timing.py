"""Latency statistics and the clocks and memory probes behind them.

Percentiles use numpy's default ``linear`` method (Hyndman and Fan type 7): the q-th
percentile of n sorted samples interpolates linearly at rank ``q/100 * (n - 1)``. With few
samples p90 and p99 lie between the largest ones; the sample count is always reported beside
them. Warm-up calls are made and discarded before any sample is taken.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

PERCENTILE_METHOD = "linear"


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0-100) of ``samples`` by the linear (type 7) method."""
    if not samples:
        raise ValueError("percentile of no samples")
    return float(np.percentile(np.asarray(samples, dtype=np.float64), q, method=PERCENTILE_METHOD))


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Per-call latency of a batch of ``batch`` images, in seconds.

    Throughput is images per second over the whole measured run: ``batch * n / sum(samples)``.
    """

    samples: tuple[float, ...]
    batch: int

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError("no latency samples")
        if self.batch < 1:
            raise ValueError(f"batch must be at least 1, got {self.batch}")

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return percentile(list(self.samples), 50)

    @property
    def p90(self) -> float:
        return percentile(list(self.samples), 90)

    @property
    def p99(self) -> float:
        return percentile(list(self.samples), 99)

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples))

    @property
    def throughput(self) -> float:
        """Images per second."""
        return self.batch * self.n / float(np.sum(self.samples))

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "n": self.n,
            "samples_s": list(self.samples),
            "median_s": self.median,
            "p90_s": self.p90,
            "p99_s": self.p99,
            "mean_s": self.mean,
            "min_s": min(self.samples),
            "max_s": max(self.samples),
            "images_per_s": self.throughput,
            "percentile_method": PERCENTILE_METHOD,
        }


def wall_clock(fn: Callable[[], Any]) -> float:
    """Seconds one call of ``fn`` takes by the host's monotonic clock (the call must return
    only when its work is done, as every runtime backend's ``run`` does)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cuda_event_clock(fn: Callable[[], Any]) -> float:
    """Seconds one call of ``fn`` takes by CUDA events on the current stream, for PyTorch work
    that is queued asynchronously on the GPU."""
    import torch

    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000.0


def measure(
    fn: Callable[[], Any],
    *,
    batch: int,
    repeats: int,
    warmup: int,
    clock: Callable[[Callable[[], Any]], float] = wall_clock,
    progress: Callable[[], None] | None = None,
) -> LatencyStats:
    """Call ``fn`` ``warmup`` times unmeasured, then ``repeats`` times measured by ``clock``."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        samples.append(clock(fn))
        if progress is not None:
            progress()
    return LatencyStats(tuple(samples), batch)


@dataclasses.dataclass
class GpuMemory:
    """The device memory one benchmark row holds for itself, and how it was measured.

    Never the whole device's use (``cudaMemGetInfo``): that counts every other model measured
    in the same process, PyTorch's cache and CUDA-graph pools, and other processes. Each
    backend says what belongs to it (``Candidate.gpu_memory``); None where it reports nothing.
    """

    peak_bytes: int | None = None
    measure: str = "not reported"


@contextlib.contextmanager
def no_gpu_memory(measure: str = "not reported") -> Iterator[GpuMemory]:
    """For a backend that holds no device memory, or reports none."""
    yield GpuMemory(None, measure)


def host_rss_bytes() -> int:
    """Resident set size of this process."""
    try:
        import psutil

        return int(psutil.Process(os.getpid()).memory_info().rss)
    except ImportError:
        # /proc/self/statm: resident pages is the second field.
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Context manager sampling the peak host RSS in a background thread every ``interval``
    seconds while the block runs."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        self.peak_rss = max(self.peak_rss, host_rss_bytes())

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> PeakMemory:
        self._sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
