"""Scaling: time against resolution (batch 1) and against batch size (at one size), and the
cost per megapixel. Times the decoded-array path only (``speed`` covers JPEG I/O)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from dbsi.benchmarks.candidates import ModelSet
from dbsi.benchmarks.report import base_report
from dbsi.benchmarks.run_report import (
    look_at_machine,
    open_models,
    progress_bar,
    require_candidates,
    timing_settings,
)
from dbsi.benchmarks.speed import (
    IO_MODEL,
    add_ratios,
    flops_at,
    input_batch,
    latency_row,
    measure_model,
)

DEFAULT_RESOLUTIONS = ((512, 768), (768, 1152), (1024, 1536), (1536, 2304), (2160, 3840))
DEFAULT_BATCHES = (1, 2, 4)
DEFAULT_BATCH_SIZE = (1024, 1536)

COLUMNS = [
    ("sweep", "sweep", ""),
    ("backend", "backend", ""),
    ("size", "size", ""),
    ("MP", "megapixels", ".2f"),
    ("batch", "batch", "d"),
    ("n", "n", "d"),
    ("median ms", "median_ms", ".1f"),
    ("p90 ms", "p90_ms", ".1f"),
    ("img/s", "images_per_s", ".3f"),
    ("ms/MP", "ms_per_megapixel", ".1f"),
    ("x ref", "speedup_vs_reference", ".2f"),
    ("peak RSS MiB", "peak_host_rss_mib", ".0f"),
]


def run_scaling(
    models: ModelSet,
    resolutions: Sequence[tuple[int, int]],
    batches: Sequence[int],
    batch_size: tuple[int, int],
    *,
    repeats: int,
    warmup: int,
    progress: Callable[[], None] | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Rows for the resolution sweep (batch 1) and the batch sweep (at ``batch_size``)."""
    plan = [("resolution", size, 1) for size in resolutions]
    plan += [("batch", batch_size, b) for b in batches]
    rows = []
    for sweep, (height, width), batch in plan:
        images = input_batch(height, width, batch)
        for candidate in models.candidates:
            reason = candidate.accepts(images.shape)
            if reason is not None:
                log(f"{candidate.name}: skipped at {height}x{width} batch {batch}: {reason}")
                continue
            stats, memory = measure_model(
                candidate, images, repeats=repeats, warmup=warmup, progress=progress
            )
            flops = flops_at(candidate.config, height, width)
            row = latency_row(candidate, stats, memory, (height, width), IO_MODEL, flops)
            megapixels = height * width / 1e6
            row.update(
                sweep=sweep,
                megapixels=megapixels,
                ms_per_megapixel=row["median_s"] * 1e3 / (batch * megapixels),
            )
            rows.append(row)
    # Ratios within each sweep separately: the same size and batch can appear in both.
    for sweep in ("resolution", "batch"):
        add_ratios([r for r in rows if r["sweep"] == sweep])
    return rows


def scaling_report(
    models: Iterable[Path],
    cache: Path,
    resolutions: list[tuple[int, int]],
    batches: list[int],
    batch_size: tuple[int, int],
    *,
    repeats: int | None,
    warmup: int | None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """``bokeh-bench scaling``: open ``models``, run both sweeps (``run_scaling``) and return
    the report. ``repeats`` and ``warmup`` default by machine (``run_report.timing_settings``)."""
    machine, gpu = look_at_machine()
    repeats, warmup = timing_settings(repeats, warmup, gpu)
    model_set = open_models(models, cache, gpu, log)
    require_candidates(model_set)
    calls = (len(resolutions) + len(batches)) * len(model_set.candidates) * repeats
    try:
        with progress_bar(calls, "scaling", "call") as bar:
            rows = run_scaling(
                model_set,
                resolutions,
                batches,
                batch_size,
                repeats=repeats,
                warmup=warmup,
                progress=bar.update,
                log=log,
            )
    finally:
        model_set.close()
    return base_report(
        "scaling",
        machine,
        model_set,
        rows=rows,
        settings={
            "repeats": repeats,
            "warmup": warmup,
            "resolutions": resolutions,
            "batches": batches,
            "batch_size": batch_size,
        },
    )
