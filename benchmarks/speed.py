"""``bokeh-bench speed``: latency and throughput of every backend at HD sizes, with and without
JPEG decode and encode, FLOPs and achieved FLOP/s, and ratios against the reference.

"model" rows time ``render`` on a decoded uint8 batch already in host memory (host copies
included for GPU backends); "decode+encode" rows time the whole file-to-file path: decode each
JPEG with OpenCV, stack, render, encode each result as JPEG.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dbsi.benchmarks.candidates import Candidate, ModelSet
from dbsi.benchmarks.images import generated_image
from dbsi.benchmarks.report import base_report
from dbsi.benchmarks.run_report import (
    look_at_machine,
    open_models,
    progress_bar,
    require_candidates,
    timing_settings,
)
from dbsi.benchmarks.timing import LatencyStats, PeakMemory, measure, wall_clock
from dbsi.runtime.images import decode_image

DEFAULT_SIZES = ((1024, 1536), (1024, 1575))
# --size 4k: UHD landscape. The ONNX graphs take it (sides up to 8192, dbsi.max_input_side);
# TensorRT engines only when built with --max-shape reaching it (else the row is skipped).
SIZE_4K = (2160, 3840)
JPEG_QUALITY = 95
IO_MODEL = "model"
IO_CODEC = "decode+encode"

COLUMNS = [
    ("backend", "backend", ""),
    ("device", "device", ""),
    ("size", "size", ""),
    ("batch", "batch", "d"),
    ("I/O", "io", ""),
    ("n", "n", "d"),
    ("median ms", "median_ms", ".1f"),
    ("p90 ms", "p90_ms", ".1f"),
    ("p99 ms", "p99_ms", ".1f"),
    ("img/s", "images_per_s", ".3f"),
    ("GFLOP/img", "gflop_per_image", ".1f"),
    ("GFLOP/s", "achieved_gflop_per_s", ".1f"),
    ("x ref", "speedup_vs_reference", ".2f"),
    ("peak RSS MiB", "peak_host_rss_mib", ".0f"),
    ("peak GPU MiB", "peak_gpu_memory_mib", ".0f"),
]


def parse_size(text: str) -> tuple[int, int]:
    """``"1024x1536"`` -> (1024, 1536), ``"4k"`` -> ``SIZE_4K``; ValueError otherwise."""
    if text.strip().lower() == "4k":
        return SIZE_4K
    parts = text.lower().replace("*", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"size {text!r} is not HEIGHTxWIDTH (e.g. 1024x1536)")
    height, width = (int(p) for p in parts)
    if height < 1 or width < 1:
        raise ValueError(f"size {text!r} has a zero side")
    return height, width


def input_batch(height: int, width: int, batch: int) -> np.ndarray:
    """``batch`` distinct generated images, uint8 N x H x W x 3 BGR."""
    return np.stack([generated_image(height, width, seed=i) for i in range(batch)])


def encode_jpegs(batch: np.ndarray) -> list[bytes]:
    return [encode_jpeg(image) for image in batch]


def encode_jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return data.tobytes()


def file_to_file(candidate: Candidate, jpegs: Sequence[bytes]) -> list[bytes]:
    """Decode, render, encode: what a batch job does per batch, minus the disk."""
    decoded = [decode_image(j).bgr for j in jpegs]
    return encode_jpegs(candidate.render(np.stack(decoded)))


def mib(value: int | None) -> float | None:
    return None if value is None else value / 2**20


@contextlib.contextmanager
def row_memory(candidate: Candidate) -> Iterator[dict[str, Any]]:
    """The memory figures of one row, filled in when the block ends: the host's peak RSS and
    the device memory the candidate reports as its own (``Candidate.gpu_memory``)."""
    figures: dict[str, Any] = {}
    with PeakMemory() as host, candidate.gpu_memory() as gpu:
        yield figures
    figures.update(
        peak_host_rss_bytes=host.peak_rss,
        peak_gpu_memory_bytes=gpu.peak_bytes,
        gpu_memory_measure=gpu.measure,
    )


def latency_row(
    candidate: Candidate,
    stats: Any,
    memory: dict[str, Any],
    size: tuple[int, int],
    io: str,
    flops_per_image: int | None,
) -> dict[str, Any]:
    figures = stats.to_dict()
    row: dict[str, Any] = {
        "backend": candidate.name,
        "device": candidate.device,
        "precision": candidate.precision,
        "source": candidate.source,
        "size": f"{size[0]}x{size[1]}",
        "height": size[0],
        "width": size[1],
        "io": io,
        **figures,
        "median_ms": figures["median_s"] * 1e3,
        "p90_ms": figures["p90_s"] * 1e3,
        "p99_ms": figures["p99_s"] * 1e3,
        "flops_per_image": flops_per_image,
        "gflop_per_image": None if flops_per_image is None else flops_per_image / 1e9,
        "achieved_gflop_per_s": None
        if flops_per_image is None
        else flops_per_image * figures["batch"] / figures["median_s"] / 1e9,
        **memory,
        "peak_host_rss_mib": mib(memory["peak_host_rss_bytes"]),
        "peak_gpu_memory_mib": mib(memory["peak_gpu_memory_bytes"]),
        "is_reference": candidate.is_reference,
    }
    return row


def measure_model(
    candidate: Candidate,
    images: np.ndarray,
    *,
    repeats: int,
    warmup: int,
    progress: Callable[[], None] | None,
) -> tuple[LatencyStats, dict[str, Any]]:
    """Time ``candidate`` on a decoded batch after at least the warm-up calls it needs; the
    memory figures (``row_memory``) cover this measurement only."""
    with row_memory(candidate) as memory:
        stats = measure(
            lambda: candidate.render(images),
            batch=len(images),
            repeats=repeats,
            warmup=max(warmup, candidate.warmup_calls),
            clock=candidate.clock,
            progress=progress,
        )
    return stats, memory


def flops_at(config: dict[str, Any], height: int, width: int) -> int | None:
    """Render FLOPs per image at this size, None when torch (the counter) is not installed."""
    try:
        from dbsi.benchmarks.flops import render_flops
        from dbsi.train.config import BokehConfig
    except ImportError:
        return None
    return render_flops(BokehConfig.from_dict(config), height, width)


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """``speedup_vs_reference`` = reference median / this median, within the same size, batch
    and I/O; the reference is the PyTorch row, else the first backend measured."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["size"], row["batch"], row["io"]), []).append(row)
    for group in groups.values():
        reference = next((r for r in group if r["is_reference"]), group[0])
        for row in group:
            row["reference_backend"] = reference["backend"]
            row["speedup_vs_reference"] = reference["median_s"] / row["median_s"]


def run_speed(
    models: ModelSet,
    sizes: Sequence[tuple[int, int]],
    batches: Sequence[int],
    *,
    repeats: int,
    warmup: int,
    with_codec: bool = True,
    progress: Callable[[], None] | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """One row per backend, size, batch and I/O mode (see the module docstring), in that
    order of sizes, batches and backends. One backend at a time runs every size and is closed
    after its last row: a backend keeps the buffers of the largest picture it ran (ONNX
    Runtime's arena, OpenVINO's shape-specific models), and eight of them held at 4K (four
    graphs on two backends) took the 24 GiB of an AVX-512 Xeon and were killed."""
    batches_by_shape = {
        (height, width, size): input_batch(height, width, size)
        for height, width in sizes
        for size in batches
    }
    jpegs_by_shape = {
        shape: encode_jpegs(batch) for shape, batch in batches_by_shape.items() if with_codec
    }
    rows_by_shape: dict[tuple[int, int, int], list[dict[str, Any]]] = {
        shape: [] for shape in batches_by_shape
    }
    for candidate in models.candidates:
        for (height, width, batch_size), batch in batches_by_shape.items():
            shape_rows = rows_by_shape[height, width, batch_size]
            reason = candidate.accepts(batch.shape)
            if reason is not None:
                where = f"{height}x{width} batch {batch_size}"
                log(f"{candidate.name}: skipped at {where}: {reason}")
                continue
            flops = flops_at(candidate.config, height, width)
            # Memory per row: the model row's peak must not include the codec run.
            stats, memory = measure_model(
                candidate, batch, repeats=repeats, warmup=warmup, progress=progress
            )
            shape_rows.append(
                latency_row(candidate, stats, memory, (height, width), IO_MODEL, flops)
            )
            if with_codec:
                jpegs = jpegs_by_shape[height, width, batch_size]
                # Already warm: the codec path reuses the warmed-up backend.
                with row_memory(candidate) as codec_memory:
                    codec = measure(
                        lambda c=candidate, j=jpegs: file_to_file(c, j),
                        batch=batch_size,
                        repeats=repeats,
                        warmup=0,
                        clock=wall_clock,
                        progress=progress,
                    )
                shape_rows.append(
                    latency_row(candidate, codec, codec_memory, (height, width), IO_CODEC, flops)
                )
        candidate.close()
    rows = [row for shape_rows in rows_by_shape.values() for row in shape_rows]
    add_ratios(rows)
    return rows


def auto_choices(models: ModelSet) -> list[str]:
    """For each exported model measured, which backend ``bokeh-run --backend auto`` opens it
    with on this machine and why (``dbsi.runtime.registry.choose_backend``)."""
    from dbsi.runtime.registry import CHECKPOINT_SUFFIXES, choose_backend

    sources = [Path(c.source) for c in models.candidates]
    notes = []
    for source in dict.fromkeys(s for s in sources if s.suffix.lower() not in CHECKPOINT_SUFFIXES):
        name, why = choose_backend(source)
        notes.append(f"bokeh-run --backend auto runs {source.name} on {name} here ({why})")
    return notes


def speed_report(
    models: Iterable[Path],
    cache: Path,
    sizes: list[tuple[int, int]],
    batches: list[int],
    *,
    repeats: int | None,
    warmup: int | None,
    with_codec: bool = True,
    pytorch_only: bool = False,
    openvino_bf16: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """``bokeh-bench speed``: open ``models`` (the PyTorch renders only with ``pytorch_only``),
    time them with ``run_speed`` and return the report. ``repeats`` and ``warmup`` default by
    machine (``run_report.timing_settings``)."""
    machine, gpu = look_at_machine()
    repeats, warmup = timing_settings(repeats, warmup, gpu)
    model_set = open_models(
        models,
        cache,
        gpu,
        log,
        torch_variants=True,
        with_backends=not pytorch_only,
        openvino_bf16=openvino_bf16,
    )
    require_candidates(model_set)
    calls = len(sizes) * len(batches) * len(model_set.candidates) * repeats
    calls *= 2 if with_codec else 1
    try:
        with progress_bar(calls, "speed", "call") as bar:
            rows = run_speed(
                model_set,
                sizes,
                batches,
                repeats=repeats,
                warmup=warmup,
                with_codec=with_codec,
                progress=bar.update,
                log=log,
            )
    finally:
        model_set.close()
    report = base_report(
        "speed",
        machine,
        model_set,
        rows=rows,
        settings={"repeats": repeats, "warmup": warmup, "sizes": sizes, "batches": batches},
    )
    report["notes"].extend(auto_choices(model_set))
    report["notes"].append(
        f"{repeats} measured calls after {warmup} warm-up per row (more for a backend that "
        "needs them: ONNX Runtime settles on its third call on a shape, OpenVINO compiles a "
        "model for a shape on its second); p90/p99 by "
        "linear interpolation (numpy 'linear'); x ref = reference median / row median."
    )
    measures = dict.fromkeys(
        f"{row['backend']}: {row['gpu_memory_measure']}"
        for row in rows
        if row["peak_gpu_memory_bytes"] is not None
    )
    if measures:
        report["notes"].append(
            "peak GPU MiB is each row's own device memory, never the whole device's use: "
            + "; ".join(measures)
        )
    return report
