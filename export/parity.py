"""Parity statistics between a reference render and a candidate, and the pass/fail thresholds
per precision. The one place these numbers live: the export checks and ``bokeh-bench`` both
judge with them.

Plain numpy, so the lean runtime side may import it too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dbsi.train.metrics import psnr

# fp32: every pixel within 2 levels, and at most 0.1% of pixels more than 1 level off (a pixel
# counts as off when any of its channels is). fp16: PSNR against the fp32 reference.
# Weight maps (when the graph outputs them): a weight error of 1/510 moves a pixel by half a
# level at most; the limits stay well below that (ONNX Runtime fp32 measures about 1e-5).
PARITY_THRESHOLDS: dict[str, dict[str, float]] = {
    "fp32": {"max_abs_error": 2, "max_share_over_1_level": 0.001, "weights_max_abs_error": 5e-4},
    "fp16": {"min_psnr_db": 40.0, "weights_max_abs_error": 1e-2},
}
# bf16 (PyTorch autocast) is judged as the other 16-bit float.
PARITY_THRESHOLDS["bf16"] = PARITY_THRESHOLDS["fp16"]
# int8 (both flavours): the same 40 dB against the fp32 render.
PARITY_THRESHOLDS["int8-cpu"] = PARITY_THRESHOLDS["int8-tensorrt"] = {"min_psnr_db": 40.0}


def parity_stats(reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
    """Compare two uint8 images or batches of the same shape (channels last).

    Returns ``max_abs_error`` (levels), ``mean_abs_error``, ``psnr_db`` (``inf`` when equal;
    data range 255), ``share_over_1_level`` (share of pixels with some channel more than one
    level off) and ``pixels``.
    """
    if reference.shape != candidate.shape:
        raise ValueError(f"shapes differ: reference {reference.shape}, candidate {candidate.shape}")
    if reference.dtype != np.uint8 or candidate.dtype != np.uint8:
        raise ValueError(
            f"parity compares uint8 images, got {reference.dtype} and {candidate.dtype}"
        )
    diff = np.abs(reference.astype(np.int16) - candidate.astype(np.int16))
    per_pixel = diff.max(axis=-1)
    return {
        "max_abs_error": int(diff.max()),
        "mean_abs_error": float(diff.mean()),
        "psnr_db": psnr(reference, candidate),
        "share_over_1_level": float(np.mean(per_pixel > 1)),
        "pixels": int(per_pixel.size),
    }


def parity_failures(stats: dict[str, Any], precision: str) -> list[str]:
    """Why ``stats`` miss the thresholds of ``precision`` (a key of ``PARITY_THRESHOLDS``:
    fp32, fp16, bf16, int8-cpu, int8-tensorrt); empty when they pass."""
    if precision not in PARITY_THRESHOLDS:
        raise ValueError(f"unknown precision {precision!r}: one of {', '.join(PARITY_THRESHOLDS)}")
    limits = PARITY_THRESHOLDS[precision]
    failures = []
    if "max_abs_error" in limits and stats["max_abs_error"] > limits["max_abs_error"]:
        failures.append(
            f"max abs error {stats['max_abs_error']} > {limits['max_abs_error']} levels"
        )
    if (
        "max_share_over_1_level" in limits
        and stats["share_over_1_level"] > limits["max_share_over_1_level"]
    ):
        failures.append(
            f"{stats['share_over_1_level']:.4%} of pixels off by more than 1 level "
            f"(limit {limits['max_share_over_1_level']:.2%})"
        )
    if "min_psnr_db" in limits and stats["psnr_db"] < limits["min_psnr_db"]:
        failures.append(f"PSNR {stats['psnr_db']:.2f} dB < {limits['min_psnr_db']:.0f} dB")
    return failures
